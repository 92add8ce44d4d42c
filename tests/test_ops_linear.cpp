// Linear (nn.Linear, y = x·Wᵀ + b): gradient check of the reference, then the sgemm path against it.
#include <gtest/gtest.h>

#include "miniseq/ops/backend.h"
#include "support/op_check.h"

using namespace miniseq;
using namespace miniseq::test;

TEST(LinearReference, GradientCheck) {
  const int64_t T = 3, in = 4, out = 5;
  const Vec x = to_double(random_floats(T * in, 1)), w = to_double(random_floats(out * in, 2)),
            b = to_double(random_floats(out, 3)), r = to_double(random_floats(T * out, 4));
  Vec dx, dw, db;
  ref::linear_backward(r, x, w, in, out, dx, dw, db);
  auto loss = [&](const Vec& xx, const Vec& ww, const Vec& bb) {
    return dot(ref::linear_forward(xx, ww, bb, in, out), r);
  };
  EXPECT_TRUE(grad_check([&](const Vec& v) { return loss(v, w, b); }, x, dx));
  EXPECT_TRUE(grad_check([&](const Vec& v) { return loss(x, v, b); }, w, dw));
  EXPECT_TRUE(grad_check([&](const Vec& v) { return loss(x, w, v); }, b, db));
}

// Every output is a dot product of length n = in (y), out (dx) or T (dW, db) of terms |x·w| <= 1 with random
// signs, so partial sums stay around max|result| + 1: fp32_tol(n, max|result| + 1).
TEST(LinearCpu, MatchesReference) {
  auto be = make_cpu_backend();
  struct Case {
    int64_t T, in, out;
  };
  for (const Case c :
       {Case{1, 1, 1}, Case{1, 16, 17}, Case{7, 15, 33}, Case{65, 64, 63}, Case{129, 100, 31}}) {
    for (bool with_bias : {false, true}) {
      SCOPED_TRACE("T " + std::to_string(c.T) + " in " + std::to_string(c.in) + " out " +
                   std::to_string(c.out) + (with_bias ? " bias" : ""));
      auto x = random_floats(c.T * c.in, 1), w = random_floats(c.out * c.in, 2), b = random_floats(c.out, 3),
           dy = random_floats(c.T * c.out, 4);
      std::vector<float> y(c.T * c.out), dx(c.T * c.in), dw(c.out * c.in, 0.5f), db(c.out, 0.5f);
      Tensor tb = tensor_of(b, {c.out}), tdw = tensor_of(dw, {c.out, c.in}), tdb = tensor_of(db, {c.out});
      be->linear_forward(tensor_of(x, {c.T, c.in}), tensor_of(w, {c.out, c.in}), with_bias ? &tb : nullptr,
                         tensor_of(y, {c.T, c.out}));
      be->linear_backward(tensor_of(dy, {c.T, c.out}), tensor_of(x, {c.T, c.in}), tensor_of(w, {c.out, c.in}),
                          tensor_of(dx, {c.T, c.in}), &tdw, with_bias ? &tdb : nullptr, /*dx_accum=*/false);
      const Vec ry =
          ref::linear_forward(to_double(x), to_double(w), with_bias ? to_double(b) : Vec{}, c.in, c.out);
      Vec rdx, rdw, rdb;
      ref::linear_backward(to_double(dy), to_double(x), to_double(w), c.in, c.out, rdx, rdw, rdb);
      for (double& v : rdw) v += 0.5;
      for (double& v : rdb) v += with_bias ? 0.5 : 0.0;
      if (!with_bias) rdb.assign(c.out, 0.5);
      EXPECT_TRUE(all_close(y, ry, fp32_tol(c.in, max_abs(ry) + 1.0))) << "y";
      EXPECT_TRUE(all_close(dx, rdx, fp32_tol(c.out, max_abs(rdx) + 1.0))) << "dx";
      EXPECT_TRUE(all_close(dw, rdw, fp32_tol(c.T, max_abs(rdw) + 1.0))) << "dw";
      EXPECT_TRUE(all_close(db, rdb, fp32_tol(c.T, max_abs(rdb) + 1.0))) << "db";
      // dx_accum adds; an empty dx skips the input gradient
      std::vector<float> dx2(c.T * c.in, 2.0f);
      be->linear_backward(tensor_of(dy, {c.T, c.out}), tensor_of(x, {c.T, c.in}), tensor_of(w, {c.out, c.in}),
                          tensor_of(dx2, {c.T, c.in}), nullptr, nullptr, /*dx_accum=*/true);
      for (double& v : rdx) v += 2.0;
      EXPECT_TRUE(all_close(dx2, rdx, fp32_tol(c.out, max_abs(rdx) + 1.0))) << "dx accumulated";
      be->linear_backward(tensor_of(dy, {c.T, c.out}), tensor_of(x, {c.T, c.in}), tensor_of(w, {c.out, c.in}),
                          Tensor(), &tdw, nullptr, false);
    }
  }
}
