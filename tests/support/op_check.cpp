#include "support/op_check.h"

#include <cmath>
#include <random>
#include <sstream>

namespace miniseq::test {

std::vector<float> random_floats(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<int32_t> random_ints(size_t n, uint32_t seed, int32_t lo, int32_t hi) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(lo, hi);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = dist(rng);
  return v;
}

Vec to_double(const std::vector<float>& x) {
  return Vec(x.begin(), x.end());
}

std::vector<float> to_float(const Vec& x) {
  std::vector<float> v(x.size());
  for (size_t i = 0; i < x.size(); ++i) v[i] = static_cast<float>(x[i]);
  return v;
}

double max_abs(const Vec& x) {
  double m = 0.0;
  for (double v : x) m = std::max(m, std::abs(v));
  return m;
}

double max_abs(const std::vector<float>& x) {
  double m = 0.0;
  for (float v : x) m = std::max(m, static_cast<double>(std::abs(v)));
  return m;
}

double dot(const Vec& a, const Vec& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

::testing::AssertionResult all_close(const std::vector<float>& got, const Vec& want, double tol) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " != expected " << want.size();
  size_t worst = 0;
  double worst_err = -1.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = std::abs(static_cast<double>(got[i]) - want[i]);
    if (!(e <= worst_err) || std::isnan(e)) {  // NaN counts as the worst
      worst_err = std::isnan(e) ? INFINITY : e;
      worst = i;
    }
  }
  if (worst_err <= tol) return ::testing::AssertionSuccess() << "max error " << worst_err << " <= " << tol;
  return ::testing::AssertionFailure() << "element " << worst << ": got " << got[worst] << ", expected "
                                       << want[worst] << ", error " << worst_err << " > tolerance " << tol;
}

::testing::AssertionResult grad_check(const std::function<double(const Vec&)>& f, const Vec& x,
                                      const Vec& grad, double rel_tol) {
  if (grad.size() != x.size()) return ::testing::AssertionFailure() << "gradient size mismatch";
  const double scale = std::max(1.0, max_abs(grad));
  Vec xp = x;
  for (size_t i = 0; i < x.size(); ++i) {
    const double h = 1e-6 * std::max(1.0, std::abs(x[i]));
    xp[i] = x[i] + h;
    const double fp = f(xp);
    xp[i] = x[i] - h;
    const double fm = f(xp);
    xp[i] = x[i];
    const double num = (fp - fm) / (2.0 * h);
    if (!(std::abs(num - grad[i]) <= rel_tol * scale))
      return ::testing::AssertionFailure() << "d/dx[" << i << "]: analytic " << grad[i] << ", numeric " << num
                                           << " (tolerance " << rel_tol * scale << ")";
  }
  return ::testing::AssertionSuccess();
}

double rel_l2(const float* a, const float* ref, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& ref) {
  return rel_l2(a.data(), ref.data(), static_cast<int64_t>(a.size()));
}

}  // namespace miniseq::test
