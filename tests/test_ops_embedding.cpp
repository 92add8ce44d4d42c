// Embedding: gather forward (exact), scatter-add backward with repeated ids, torch's padding_idx rule, and
// the out-of-vocabulary errors.
#include <gtest/gtest.h>

#include "miniseq/ops/backend.h"
#include "support/op_check.h"

using namespace miniseq;
using namespace miniseq::test;

TEST(EmbeddingReference, GradientCheck) {
  const int64_t V = 4, d = 3;
  const std::vector<int32_t> ids{2, 0, 2, 3};
  const Vec table = to_double(random_floats(V * d, 1)), r = to_double(random_floats(ids.size() * d, 2));
  const Vec dt = ref::embedding_backward(ids, r, V, d);
  EXPECT_TRUE(grad_check([&](const Vec& t) { return dot(ref::embedding_forward(ids, t, d), r); }, table, dt));
}

// Forward is a copy: exact. Backward sums at most T rows per table row: fp32_tol(T, max|dtable|).
TEST(EmbeddingCpu, MatchesReference) {
  auto be = make_cpu_backend();
  for (int64_t d : {1, 15, 16, 17, 64, 65, 200}) {
    const int64_t V = 11, T = 37;
    SCOPED_TRACE("d " + std::to_string(d));
    auto ids = random_ints(T, 5, 0, V - 1);  // 37 ids over 11 rows: many repeats
    auto table = random_floats(V * d, 6), dout = random_floats(T * d, 7);
    std::vector<float> out(T * d), dtab(V * d, 1.0f);
    be->embedding_forward(ids.data(), tensor_of(table, {V, d}), tensor_of(out, {T, d}));
    be->embedding_backward(ids.data(), tensor_of(dout, {T, d}), tensor_of(dtab, {V, d}), /*padding_idx=*/-1);
    EXPECT_TRUE(all_close(out, ref::embedding_forward(ids, to_double(table), d), 0.0));
    Vec rd = ref::embedding_backward(ids, to_double(dout), V, d);
    for (double& v : rd) v += 1.0;
    EXPECT_TRUE(all_close(dtab, rd, fp32_tol(T, max_abs(rd))));
  }
}

// nn.Embedding(padding_idx=p): the positions holding id p add nothing to the gradient, every other position
// adds its row as usual. The reference is the plain scatter-add of dout with those positions' rows zeroed.
// dtable starts at 1 + its row index (what an LM head tied to the table would have put there): the padding
// row keeps it exactly.
TEST(EmbeddingCpu, PaddingIdxPositionsAddNothing) {
  auto be = make_cpu_backend();
  const int64_t V = 11, d = 65, T = 37;
  auto ids = random_ints(T, 5, 0, V - 1);
  for (int64_t t : {0, 3, 4, 20, 36})
    ids[static_cast<size_t>(t)] = 6;  // the padding id, first and last included
  ids[10] = 0;
  auto dout = random_floats(T * d, 7);
  for (int64_t padding_idx : {int64_t{6}, int64_t{0}, int64_t{-1}}) {
    SCOPED_TRACE("padding_idx " + std::to_string(padding_idx));
    std::vector<float> dtab(V * d);
    for (int64_t r = 0; r < V; ++r) std::fill_n(dtab.begin() + r * d, d, static_cast<float>(1 + r));
    be->embedding_backward(ids.data(), tensor_of(dout, {T, d}), tensor_of(dtab, {V, d}), padding_idx);
    Vec kept = to_double(dout);
    int64_t dropped = 0;
    for (int64_t t = 0; t < T; ++t)
      if (ids[static_cast<size_t>(t)] == padding_idx) {
        std::fill_n(kept.begin() + t * d, d, 0.0);
        ++dropped;
      }
    EXPECT_EQ(dropped > 0, padding_idx >= 0);  // the rule is exercised (ids hold 0 and 6)
    Vec rd = ref::embedding_backward(ids, kept, V, d);
    for (int64_t i = 0; i < V * d; ++i) rd[static_cast<size_t>(i)] += static_cast<double>(1 + i / d);
    EXPECT_TRUE(all_close(dtab, rd, fp32_tol(T, max_abs(rd))));
    if (padding_idx >= 0) {
      for (int64_t c = 0; c < d; ++c) {
        EXPECT_EQ(dtab[static_cast<size_t>(padding_idx * d + c)], 1.0f + padding_idx);
      }
    }
  }
  std::vector<float> dtab(V * d);
  EXPECT_THROW(be->embedding_backward(ids.data(), tensor_of(dout, {T, d}), tensor_of(dtab, {V, d}), V),
               Error);
  EXPECT_THROW(be->embedding_backward(ids.data(), tensor_of(dout, {T, d}), tensor_of(dtab, {V, d}), -2),
               Error);
}

TEST(EmbeddingCpu, RejectsIdsOutsideTheVocabulary) {
  auto be = make_cpu_backend();
  std::vector<float> table(4 * 2), out(2 * 2);
  std::vector<int32_t> ids{1, 4};
  EXPECT_THROW(be->embedding_forward(ids.data(), tensor_of(table, {4, 2}), tensor_of(out, {2, 2})), Error);
  ids = {-1, 0};
  EXPECT_THROW(be->embedding_forward(ids.data(), tensor_of(table, {4, 2}), tensor_of(out, {2, 2})), Error);
}
