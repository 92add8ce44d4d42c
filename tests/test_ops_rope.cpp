// RoPE (rotate_half): the reference's backward is the transpose of its forward (gradient check), the CPU
// kernel matches the double reference, and the fp32 angle arithmetic is Hugging Face's.
#include <gtest/gtest.h>

#include <cmath>

#include "miniseq/model/rope_scaling.h"
#include "miniseq/ops/backend.h"
#include "support/op_check.h"

using namespace miniseq;
using namespace miniseq::test;

TEST(RopeReference, GradientCheck) {
  const int64_t B = 2, S = 3, Hx = 2, D = 6;
  const std::vector<int32_t> pos{0, 5, 9};
  const Vec x = to_double(random_floats(B * S * Hx * D, 1)), r = to_double(random_floats(B * S * Hx * D, 2));
  const Vec dx = ref::rope_backward(r, pos, B, S, Hx, D, 10000.0, 3.0);
  EXPECT_TRUE(grad_check(
      [&](const Vec& v) { return dot(ref::rope_forward(v, pos, B, S, Hx, D, 10000.0, 3.0), r); }, x, dx));
}

TEST(RopeReference, RotateHalfConvention) {
  // D = 2, position 1, theta irrelevant for i = 0 (inv_freq 1): (x1, x2) -> (x1 cos1 − x2 sin1, x2 cos1 + x1
  // sin1)
  const Vec y = ref::rope_forward({1.0, 2.0}, {1}, 1, 1, 1, 2, 10000.0, 1.0);
  EXPECT_NEAR(y[0], std::cos(1.0) - 2.0 * std::sin(1.0), 1e-15);
  EXPECT_NEAR(y[1], 2.0 * std::cos(1.0) + std::sin(1.0), 1e-15);
}

// The kernel builds angles in fp32 as Hugging Face does (float(pos)·inv_freq with inv_freq rounded to fp32),
// so its angle differs from the exact one by up to ~2u·|angle|, and cos/sin move by as much: the error per
// element is ~ (2 + 2u·max_angle/u)·u·|x|. fp32_tol(1, (1 + max_angle)·max|x|) covers it, max_angle = max_pos
// / factor.
TEST(RopeCpu, MatchesReference) {
  auto be = make_cpu_backend();
  struct Case {
    int64_t B, S, Hx, D;
    float theta, factor;
  };
  for (const Case c : {Case{1, 1, 1, 2, 10000.0f, 1.0f}, Case{2, 17, 3, 16, 10000.0f, 1.0f},
                       Case{1, 33, 2, 34, 500000.0f, 2.0f}, Case{2, 65, 4, 64, 10000.0f, 3.0f},
                       Case{1, 9, 2, 128, 1e6f, 8.0f}}) {
    SCOPED_TRACE("S " + std::to_string(c.S) + " D " + std::to_string(c.D));
    std::vector<int32_t> pos(c.S);
    for (int64_t s = 0; s < c.S; ++s) pos[s] = static_cast<int32_t>(3 * s + 1);  // not just 0..S-1
    const int64_t n = c.B * c.S * c.Hx * c.D;
    auto x = random_floats(n, 1), dy = random_floats(n, 2);
    const Vec rx = ref::rope_forward(to_double(x), pos, c.B, c.S, c.Hx, c.D, c.theta, c.factor);
    const Vec rdy = ref::rope_backward(to_double(dy), pos, c.B, c.S, c.Hx, c.D, c.theta, c.factor);
    const RopeParams p = rope_params_plain(c.theta, c.D, c.factor);
    be->rope_forward(tensor_of(x, {c.B, c.S, c.Hx, c.D}), pos.data(), p);
    be->rope_backward(tensor_of(dy, {c.B, c.S, c.Hx, c.D}), pos.data(), p);
    const double max_angle = 3.0 * static_cast<double>(c.S) / c.factor;
    EXPECT_TRUE(all_close(x, rx, fp32_tol(1, (1.0 + max_angle) * 1.5)));
    EXPECT_TRUE(all_close(dy, rdy, fp32_tol(1, (1.0 + max_angle) * 1.5)));
  }
}

// Round trip: backward undoes forward (a rotation's transpose is its inverse).
TEST(RopeCpu, BackwardInvertsForward) {
  auto be = make_cpu_backend();
  const int64_t S = 40, D = 32;
  std::vector<int32_t> pos(S);
  for (int64_t s = 0; s < S; ++s) pos[s] = static_cast<int32_t>(s);
  auto x = random_floats(S * 3 * D, 3);
  const auto x0 = to_double(x);
  const RopeParams p = rope_params_plain(10000.0, D);
  be->rope_forward(tensor_of(x, {1, S, 3, D}), pos.data(), p);
  be->rope_backward(tensor_of(x, {1, S, 3, D}), pos.data(), p);
  EXPECT_TRUE(all_close(x, x0, fp32_tol(1, 2.0)));
}

// attention_scaling (yarn's mscale) multiplies cos and sin: the result is the plain rotation times the scale, in
// forward and in backward (the transpose of a·R is a·Rᵀ).
TEST(RopeCpu, AttentionScalingScalesTheRotation) {
  auto be = make_cpu_backend();
  const int64_t S = 23, D = 16, Hx = 2;
  std::vector<int32_t> pos(S);
  for (int64_t s = 0; s < S; ++s) pos[s] = static_cast<int32_t>(2 * s);
  for (const bool backward : {false, true}) {
    auto plain = random_floats(S * Hx * D, 7), scaled = plain;
    RopeParams p = rope_params_plain(10000.0, D, 4.0);
    auto apply = [&](std::vector<float>& v, const RopeParams& rp) {
      if (backward) be->rope_backward(tensor_of(v, {1, S, Hx, D}), pos.data(), rp);
      else be->rope_forward(tensor_of(v, {1, S, Hx, D}), pos.data(), rp);
    };
    apply(plain, p);
    p.attention_scaling = 1.1386294f;  // 0.1·ln(4) + 1, yarn's default for factor 4
    apply(scaled, p);
    for (size_t i = 0; i < plain.size(); ++i)
      EXPECT_NEAR(scaled[i], 1.1386294 * plain[i], 4e-7 * (1.0 + std::abs(plain[i]))) << i;
  }
}
