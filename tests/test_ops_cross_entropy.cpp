// Cross-entropy on a chunk of logits with its gradient: gradient check of the reference, the CPU kernel
// against it (V across the vector width, ignored rows, a fully ignored chunk) and the label checks.
#include <gtest/gtest.h>

#include <cmath>

#include "miniseq/ops/backend.h"
#include "support/op_check.h"

using namespace miniseq;
using namespace miniseq::test;

TEST(CrossEntropyReference, GradientCheck) {
  const int64_t V = 5;
  const std::vector<int32_t> labels{3, -100, 0, 4};
  const Vec x = to_double(random_floats(labels.size() * V, 1, -4.0f, 4.0f));
  const double scale = 1.0 / 3.0;
  Vec dl;
  ref::cross_entropy(x, labels, V, scale, dl);
  EXPECT_TRUE(grad_check(
      [&](const Vec& v) {
        Vec unused;
        return ref::cross_entropy(v, labels, V, scale, unused) * scale;
      },
      x, dl));
}

TEST(CrossEntropyReference, UniformLogitsGiveLogV) {
  Vec dl;
  EXPECT_NEAR(ref::cross_entropy(Vec(7, 0.3), {2}, 7, 1.0, dl), std::log(7.0), 1e-15);
}

// loss: log Σ exp over V terms (the sum in fp32 lanes: fp32_tol(V, ·)) relative to |lse| + |x|; dlogits are
// elementwise after the sum: relative error ~ u·sqrt(V) of the softmax, times scale.
TEST(CrossEntropyCpu, MatchesReference) {
  auto be = make_cpu_backend();
  for (int64_t V : {1, 2, 15, 16, 17, 131, 1000, 32003}) {
    const int64_t C = 9;
    SCOPED_TRACE("V " + std::to_string(V));
    auto labels = random_ints(C, 3, 0, static_cast<int32_t>(V - 1));
    labels[1] = -100;
    labels[7] = -100;
    auto x = random_floats(C * V, 4, -10.0f, 10.0f);
    const Vec rx = to_double(x);
    const float scale = 1.0f / 61.0f;
    const double loss = be->cross_entropy_forward_backward(tensor_of(x, {C, V}), labels.data(), scale);
    Vec rdl;
    const double rloss = ref::cross_entropy(rx, labels, V, scale, rdl);
    EXPECT_NEAR(loss, rloss, fp32_tol(V, C * 20.0));
    EXPECT_TRUE(all_close(x, rdl, fp32_tol(V, scale)));
    for (int64_t j = 0; j < V; ++j) ASSERT_EQ(x[1 * V + j], 0.0f) << "ignored row must get a zero gradient";
  }
}

TEST(CrossEntropyCpu, FullyIgnoredChunkGivesZeroLossAndGradient) {
  auto be = make_cpu_backend();
  const int64_t C = 5, V = 33;
  auto x = random_floats(C * V, 5, -3.0f, 3.0f);
  std::vector<int32_t> labels(C, -100);
  EXPECT_EQ(be->cross_entropy_forward_backward(tensor_of(x, {C, V}), labels.data(), 0.1f), 0.0);
  for (float v : x) ASSERT_EQ(v, 0.0f);
}

TEST(CrossEntropyCpu, LargeLogitsDoNotOverflow) {
  auto be = make_cpu_backend();
  std::vector<float> x{1000.0f, 0.0f, -1000.0f};
  std::vector<int32_t> labels{1};
  const double loss = be->cross_entropy_forward_backward(tensor_of(x, {1, 3}), labels.data(), 1.0f);
  EXPECT_NEAR(loss, 1000.0, 1e-9);
  EXPECT_NEAR(x[0], 1.0, 1e-7);
  EXPECT_NEAR(x[1], -1.0, 1e-7);
  EXPECT_EQ(x[2], 0.0f);
}

TEST(CrossEntropyCpu, RejectsLabelsOutsideTheVocabulary) {
  auto be = make_cpu_backend();
  std::vector<float> x(2 * 4);
  std::vector<int32_t> labels{0, 4};
  EXPECT_THROW(be->cross_entropy_forward_backward(tensor_of(x, {2, 4}), labels.data(), 1.0f), Error);
  labels = {-1, 0};
  EXPECT_THROW(be->cross_entropy_forward_backward(tensor_of(x, {2, 4}), labels.data(), 1.0f), Error);
}
