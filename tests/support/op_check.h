// Helpers for the op tests: random inputs, fp32 <-> double, elementwise comparison with a derived tolerance,
// and a central-difference gradient check of the double references.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "miniseq/core/tensor.h"
#include "support/reference_ops.h"

namespace miniseq::test {

using ref::Vec;

// fp32 unit roundoff u = 2^-24: the relative error of one correctly rounded fp32 operation.
constexpr double kU = 0x1p-24;

// Tolerance for an fp32 result that is a reduction of n terms, compared with a double reference computed from
// the SAME fp32 inputs (so input rounding does not count). Each step of the reduction rounds with relative
// error <= u on a partial sum of size <= `magnitude`; the errors add like a random walk: |err| ~
// u·sqrt(n)·magnitude. The factor `k` (default 8) covers the tail of that distribution over thousands of
// outputs plus the handful of extra roundings per element (a scale, a division, an exp of <= 2 ulp).
inline double fp32_tol(int64_t n, double magnitude, double k = 8.0) {
  return k * kU * (std::sqrt(static_cast<double>(n)) + 1.0) * magnitude;
}

std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f);
std::vector<int32_t> random_ints(size_t n, uint32_t seed, int32_t lo, int32_t hi);  // in [lo, hi]
Vec to_double(const std::vector<float>& x);
std::vector<float> to_float(const Vec& x);
double max_abs(const Vec& x);
double max_abs(const std::vector<float>& x);

// |got[i] − want[i]| <= tol for every i; on failure names the worst element and the tolerance.
::testing::AssertionResult all_close(const std::vector<float>& got, const Vec& want, double tol);

// Gradient check of a double reference: f maps the input to a scalar loss, grad is the analytic gradient of f
// at x. Central differences with h = 1e-6·max(1, |x_i|): truncation error O(h²)·|f'''| ≈ 1e-12, cancellation
// error ≈ 1e-16·|f| / h ≈ 1e-10 for |f| ~ 1. So 1e-6 relative to the gradient's scale separates a correct
// backward (agreement to ~1e-9) from any wrong term (errors of order the gradient itself).
::testing::AssertionResult grad_check(const std::function<double(const Vec&)>& f, const Vec& x,
                                      const Vec& grad, double rel_tol = 1e-6);

// Σ a_i b_i (the scalar loss <out, R> of a gradient check).
double dot(const Vec& a, const Vec& b);

inline Tensor tensor_of(std::vector<float>& v, Shape s) {
  return Tensor(v.data(), s);
}

// ‖a − ref‖₂ / ‖ref‖₂ in double (‖a − ref‖₂ when ref is all zero): the per-tensor error of the golden tests.
double rel_l2(const float* a, const float* ref, int64_t n);
double rel_l2(const std::vector<float>& a, const std::vector<float>& ref);

}  // namespace miniseq::test
