// RMSNorm: gradient check of the double reference, then the CPU kernel against it (d across the vector width
// 16).
#include <gtest/gtest.h>

#include "miniseq/ops/backend.h"
#include "support/op_check.h"

using namespace miniseq;
using namespace miniseq::test;

TEST(RmsnormReference, GradientCheck) {
  const int64_t T = 3, d = 5;
  const double eps = 1e-5;
  const Vec x = to_double(random_floats(T * d, 1)), w = to_double(random_floats(d, 2, 0.5f, 1.5f)),
            r = to_double(random_floats(T * d, 3));
  Vec dx, dw;
  ref::rmsnorm_backward(r, x, w, d, eps, dx, dw);
  auto loss = [&](const Vec& xx, const Vec& ww) {
    Vec y, rstd;
    ref::rmsnorm_forward(xx, ww, d, eps, y, rstd);
    return dot(y, r);
  };
  EXPECT_TRUE(grad_check([&](const Vec& v) { return loss(v, w); }, x, dx));
  EXPECT_TRUE(grad_check([&](const Vec& v) { return loss(x, v); }, w, dw));
}

// y = w·x·rstd: one d-length reduction for the variance (relative error ~ u·sqrt(d) in rstd), then two
// roundings. dx adds a second d-length reduction (Σ g·x); dw sums T rows. Tolerances: fp32_tol(reduction,
// magnitude).
TEST(RmsnormCpu, MatchesReference) {
  auto be = make_cpu_backend();
  for (int64_t d : {1, 7, 15, 16, 17, 64, 130}) {
    for (int64_t T : {1, 3, 33}) {
      SCOPED_TRACE("T " + std::to_string(T) + " d " + std::to_string(d));
      const float eps = 1e-5f;
      auto x = random_floats(T * d, 10 + d), w = random_floats(d, 20 + d, 0.5f, 1.5f),
           dy = random_floats(T * d, 30);
      std::vector<float> y(T * d), rstd(T), dx(T * d), dw(d, 0.25f);
      const Tensor dwt = tensor_of(dw, {d});
      be->rmsnorm_forward(tensor_of(x, {T, d}), tensor_of(w, {d}), eps, tensor_of(y, {T, d}),
                          tensor_of(rstd, {T}));
      be->rmsnorm_backward(tensor_of(dy, {T, d}), tensor_of(x, {T, d}), tensor_of(w, {d}),
                           tensor_of(rstd, {T}), tensor_of(dx, {T, d}), &dwt, /*dx_accum=*/false);
      Vec ry, rrstd, rdx, rdw;
      ref::rmsnorm_forward(to_double(x), to_double(w), d, eps, ry, rrstd);
      ref::rmsnorm_backward(to_double(dy), to_double(x), to_double(w), d, eps, rdx, rdw);
      for (double& v : rdw) v += 0.25;  // dw accumulates
      EXPECT_TRUE(all_close(y, ry, fp32_tol(d, max_abs(ry)))) << "y";
      EXPECT_TRUE(all_close(rstd, rrstd, fp32_tol(d, max_abs(rrstd)))) << "rstd";
      EXPECT_TRUE(all_close(dx, rdx, fp32_tol(d, max_abs(rdx) + max_abs(rrstd)))) << "dx";
      EXPECT_TRUE(all_close(dw, rdw, fp32_tol(T + d, max_abs(rdw)))) << "dw";
      // dx_accum adds onto what is there
      std::vector<float> dx2(T * d, 1.0f);
      be->rmsnorm_backward(tensor_of(dy, {T, d}), tensor_of(x, {T, d}), tensor_of(w, {d}),
                           tensor_of(rstd, {T}), tensor_of(dx2, {T, d}), &dwt, /*dx_accum=*/true);
      for (double& v : rdx) v += 1.0;
      EXPECT_TRUE(all_close(dx2, rdx, fp32_tol(d, max_abs(rdx) + max_abs(rrstd)))) << "dx accumulated";
    }
  }
}
