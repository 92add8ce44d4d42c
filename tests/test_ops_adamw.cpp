// AdamW as torch.optim.AdamW: the reference against closed forms, the CPU kernel against the reference over
// several steps (n across the vector width).
#include <gtest/gtest.h>

#include <cmath>

#include "miniseq/ops/backend.h"
#include "support/op_check.h"

using namespace miniseq;
using namespace miniseq::test;

// Adam has no gradient to check; its reference is checked against closed forms instead.
TEST(AdamwReference, FirstStepIsSignedLrStep) {
  // step 1: m̂ = g, v̂ = g², so p ← p·(1 − lr·wd) − lr·g/(|g| + eps)
  Vec p{1.0, -2.0, 0.5}, m(3, 0.0), v(3, 0.0);
  const Vec g{0.3, -0.01, 0.0};
  ref::AdamW a{};
  a.lr = 0.1;
  a.weight_decay = 0.5;
  ref::adamw_step(p, g, m, v, a);
  for (size_t i = 0; i < 3; ++i) {
    const double p0 = i == 0 ? 1.0 : (i == 1 ? -2.0 : 0.5);
    EXPECT_NEAR(p[i], p0 * 0.95 - 0.1 * g[i] / (std::abs(g[i]) + 1e-8), 1e-15);
  }
}

TEST(AdamwReference, EpsIsAddedAfterTheBiasCorrection) {
  // step 2 with zero gradients: m = v = 0 stays 0 → no move; with g constant: m̂ = g, v̂ = g² exactly.
  Vec p{1.0}, m{0.0}, v{0.0};
  ref::AdamW a{};
  a.lr = 1.0;
  a.eps = 0.5;  // large eps makes its position visible
  for (int64_t step = 1; step <= 3; ++step) {
    a.step = step;
    ref::adamw_step(p, {2.0}, m, v, a);
  }
  // each step: −lr·g/(|g| + eps) = −2/2.5 = −0.8 (eps outside the bias correction of v)
  EXPECT_NEAR(p[0], 1.0 - 3 * 0.8, 1e-12);
}

// Elementwise, a dozen fp32 roundings per step and a division by sqrt(v̂) + eps that can amplify: over 3 steps
// the parameter moves by <= 3·lr; tolerance fp32_tol(1, 16·(|p| + 3·lr)) on p and fp32_tol(1, |m|, |v|)
// scale.
TEST(AdamwCpu, MatchesReference) {
  auto be = make_cpu_backend();
  for (int64_t n : {1, 15, 16, 17, 1000}) {
    SCOPED_TRACE("n " + std::to_string(n));
    auto p = random_floats(n, 1), m = std::vector<float>(n, 0.0f), v = std::vector<float>(n, 0.0f);
    Vec rp = to_double(p), rm(n, 0.0), rv(n, 0.0);
    AdamWParams ap;
    ap.lr = 1e-2;
    ap.weight_decay = 0.1;
    ap.grad_scale = 0.5f;
    ref::AdamW ra{};
    ra.lr = ap.lr;
    ra.weight_decay = ap.weight_decay;
    ra.grad_scale = ap.grad_scale;
    for (int64_t step = 1; step <= 3; ++step) {
      auto g = random_floats(n, 10 + static_cast<uint32_t>(step));
      ap.step = ra.step = step;
      be->adamw_step(tensor_of(p, {n}), tensor_of(g, {n}), tensor_of(m, {n}), tensor_of(v, {n}), ap);
      ref::adamw_step(rp, to_double(g), rm, rv, ra);
    }
    EXPECT_TRUE(all_close(p, rp, fp32_tol(1, 16.0 * (1.0 + 3 * ap.lr))));
    EXPECT_TRUE(all_close(m, rm, fp32_tol(1, 4.0 * max_abs(rm))));
    EXPECT_TRUE(all_close(v, rv, fp32_tol(1, 4.0 * max_abs(rv))));
  }
}

// A bf16 parameter with its fp32 master copy: the update runs on the master exactly as on an fp32 parameter, and
// the parameter holds the master rounded to bf16 (so updates below half a bf16 ulp accumulate in the master).
TEST(AdamwCpu, MasterCopyForBf16Parameters) {
  auto be = make_cpu_backend();
  const int64_t n = 1003;
  auto p = random_floats(n, 3), g = random_floats(n, 4);
  std::vector<float> m(n, 0.0f), v(n, 0.0f), m2 = m, v2 = v, master = p;
  std::vector<uint16_t> pb(static_cast<size_t>(n));
  convert(p.data(), DType::F32, pb.data(), DType::BF16, static_cast<size_t>(n));
  AdamWParams ap;
  ap.lr = 1e-5, ap.weight_decay = 0.1;
  for (int64_t step = 1; step <= 3; ++step) {
    ap.step = step;
    be->adamw_step(tensor_of(p, {n}), tensor_of(g, {n}), tensor_of(m, {n}), tensor_of(v, {n}), ap);
    const Tensor tmaster = tensor_of(master, {n});
    be->adamw_step(Tensor(pb.data(), {n}, DType::BF16), tensor_of(g, {n}), tensor_of(m2, {n}), tensor_of(v2, {n}), ap,
                   &tmaster);
  }
  EXPECT_EQ(master, p);  // bit for bit the fp32 update
  std::vector<uint16_t> want(static_cast<size_t>(n));
  convert(p.data(), DType::F32, want.data(), DType::BF16, static_cast<size_t>(n));
  EXPECT_EQ(pb, want);
  EXPECT_THROW(be->adamw_step(Tensor(pb.data(), {n}, DType::BF16), tensor_of(g, {n}), tensor_of(m2, {n}),
                              tensor_of(v2, {n}), ap),
               Error);
}
