// Embedding: gather forward (exact), scatter-add backward with repeated ids, and the out-of-vocabulary error.
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
    be->embedding_backward(ids.data(), tensor_of(dout, {T, d}), tensor_of(dtab, {V, d}));
    EXPECT_TRUE(all_close(out, ref::embedding_forward(ids, to_double(table), d), 0.0));
    Vec rd = ref::embedding_backward(ids, to_double(dout), V, d);
    for (double& v : rd) v += 1.0;
    EXPECT_TRUE(all_close(dtab, rd, fp32_tol(T, max_abs(rd))));
  }
}

TEST(EmbeddingCpu, RejectsIdsOutsideTheVocabulary) {
  auto be = make_cpu_backend();
  std::vector<float> table(4 * 2), out(2 * 2);
  std::vector<int32_t> ids{1, 4};
  EXPECT_THROW(be->embedding_forward(ids.data(), tensor_of(table, {4, 2}), tensor_of(out, {2, 2})), Error);
  ids = {-1, 0};
  EXPECT_THROW(be->embedding_forward(ids.data(), tensor_of(table, {4, 2}), tensor_of(out, {2, 2})), Error);
}
