// SwiGLU act = silu(gate)·up: gradient check of the reference, the CPU kernel against it, and in-place
// backward.
#include <gtest/gtest.h>

#include "miniseq/ops/backend.h"
#include "support/op_check.h"

using namespace miniseq;
using namespace miniseq::test;

TEST(SwigluReference, GradientCheck) {
  const size_t n = 9;
  const Vec g = to_double(random_floats(n, 1, -6.0f, 6.0f)), u = to_double(random_floats(n, 2)),
            r = to_double(random_floats(n, 3));
  Vec dg, du;
  ref::swiglu_backward(r, g, u, dg, du);
  EXPECT_TRUE(grad_check([&](const Vec& v) { return dot(ref::swiglu_forward(v, u), r); }, g, dg));
  EXPECT_TRUE(grad_check([&](const Vec& v) { return dot(ref::swiglu_forward(g, v), r); }, u, du));
}

// Elementwise: a few roundings plus the exp (<= 2 ulp) per element, no reduction: fp32_tol(1, |value|) with
// the magnitude taken per tensor. Gate values span [-20, 20] so the exp sees large and tiny arguments.
TEST(SwigluCpu, MatchesReference) {
  auto be = make_cpu_backend();
  for (int64_t n : {1, 15, 16, 17, 1023, 1024, 1025, 5000}) {
    SCOPED_TRACE("n " + std::to_string(n));
    auto g = random_floats(n, 1, -20.0f, 20.0f), u = random_floats(n, 2), da = random_floats(n, 3);
    std::vector<float> a(n), dg(n), du(n);
    be->swiglu_forward(tensor_of(g, {n}), tensor_of(u, {n}), tensor_of(a, {n}));
    be->swiglu_backward(tensor_of(da, {n}), tensor_of(g, {n}), tensor_of(u, {n}), tensor_of(dg, {n}),
                        tensor_of(du, {n}));
    const Vec ra = ref::swiglu_forward(to_double(g), to_double(u));
    Vec rdg, rdu;
    ref::swiglu_backward(to_double(da), to_double(g), to_double(u), rdg, rdu);
    EXPECT_TRUE(all_close(a, ra, fp32_tol(1, max_abs(ra))));
    EXPECT_TRUE(all_close(dg, rdg, fp32_tol(1, 20.0 * max_abs(rdg))));  // g·σ(1−σ) amplifies σ's error by |g|
    EXPECT_TRUE(all_close(du, rdu, fp32_tol(1, max_abs(rdu))));
    // in place: dgate over gate, dup over up
    be->swiglu_backward(tensor_of(da, {n}), tensor_of(g, {n}), tensor_of(u, {n}), tensor_of(g, {n}),
                        tensor_of(u, {n}));
    EXPECT_TRUE(all_close(g, rdg, fp32_tol(1, 20.0 * max_abs(rdg))));
    EXPECT_TRUE(all_close(u, rdu, fp32_tol(1, max_abs(rdu))));
  }
}
