// Token embedding: a row gather forward, a row scatter-add backward.
#include <algorithm>
#include <cstring>

#include <omp.h>

#include "miniseq/backend/cpu/cpu_backend.h"

namespace miniseq {

namespace {
void check_ids(const int32_t* ids, int64_t T, int64_t V) {
  for (int64_t t = 0; t < T; ++t)
    MS_CHECK(ids[t] >= 0 && ids[t] < V, "token id ", ids[t], " at position ", t,
             " is outside the vocabulary [0, ", V,
             "): the data was tokenized for another model or the embedding was not resized");
}

void check_padding_idx(int64_t padding_idx, int64_t V) {
  MS_CHECK(padding_idx >= -1 && padding_idx < V, "embedding padding_idx ", padding_idx,
           " is outside the vocabulary [0, ", V, ") (-1 = none)");
}
}  // namespace

// ids [T], table [V, d] -> out [T, d]
void CpuBackend::embedding_forward(const int32_t* ids, const Tensor& table, const Tensor& out) {
  const int64_t V = table.size(0), d = table.size(1), T = out.size(0);
  MS_DASSERT(out.size(1) == d);
  check_ids(ids, T, V);
  const float* tab = table.f32();
  float* y = out.f32();
#pragma omp parallel for schedule(static) if (T * d > (1 << 15))
  for (int64_t t = 0; t < T; ++t)
    std::memcpy(y + t * d, tab + ids[t] * d, static_cast<size_t>(d) * sizeof(float));
}

// dtable [V, d] += Σ_{t: ids[t] != padding_idx} onehot(ids[t]) ⊗ dout[t]. Threads split the d columns, so
// repeated ids never race and the summation order over t is fixed (deterministic).
void CpuBackend::embedding_backward(const int32_t* ids, const Tensor& dout, const Tensor& dtable,
                                    int64_t padding_idx) {
  const int64_t V = dtable.size(0), d = dtable.size(1), T = dout.size(0);
  MS_DASSERT(dout.size(1) == d);
  check_ids(ids, T, V);
  check_padding_idx(padding_idx, V);
  const float* dy = dout.f32();
  float* dtab = dtable.f32();
  constexpr int64_t kColBlock = 64;
  const int64_t nblocks = (d + kColBlock - 1) / kColBlock;
#pragma omp parallel for schedule(static) if (T * d > (1 << 15))
  for (int64_t cb = 0; cb < nblocks; ++cb) {
    const int64_t c0 = cb * kColBlock, c1 = std::min(d, c0 + kColBlock);
    for (int64_t t = 0; t < T; ++t) {
      if (ids[t] == padding_idx) continue;
      float* dst = dtab + ids[t] * d;
      const float* src = dy + t * d;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
    }
  }
  store_grad(dtable);
}

}  // namespace miniseq
