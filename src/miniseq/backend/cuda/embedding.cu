// Token embedding: a row gather forward; backward a deterministic scatter-add. The host groups the positions
// by token id (a stable counting of the ids, which it holds anyway), leaving out those of padding_idx, then
// one thread per (distinct id, column) sums its group in position order and adds the sum to the table row:
// no atomics, no two threads on one element. ids [T] (host int32), table [V, d] bf16, out/dout [T, d] bf16,
// dtable [V, d] fp32 (accumulated).
#include <algorithm>
#include <vector>

#include "miniseq/backend/cuda/common.cuh"
#include "miniseq/backend/cuda/cuda_ops.h"

namespace miniseq::cuda {

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

template <typename TT, typename TO>
__global__ void embedding_forward_kernel(const int32_t* ids, const TT* table, int64_t d, TO* out) {
  const int64_t t = blockIdx.x;
  const TT* src = table + static_cast<int64_t>(ids[t]) * d;
  TO* dst = out + t * d;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) dst[c] = from_f32<TO>(to_f32(src[c]));
}

// csr: [U] distinct ids, [U + 1] group offsets into order, [T] positions grouped by id (ascending within a
// group).
template <typename TG, typename TT>
__global__ void embedding_backward_kernel(const int32_t* uniq, const int32_t* offsets, const int32_t* order,
                                          const TG* dout, int64_t d, TT* dtable) {
  const int64_t u = blockIdx.x;
  const int64_t c = blockIdx.y * int64_t(blockDim.x) + threadIdx.x;
  if (c >= d) return;
  float s = 0.0f;
  for (int32_t k = offsets[u]; k < offsets[u + 1]; ++k)
    s += to_f32(dout[static_cast<int64_t>(order[k]) * d + c]);
  TT* row = dtable + static_cast<int64_t>(uniq[u]) * d;
  row[c] = from_f32<TT>(to_f32(row[c]) + s);
}

}  // namespace

void CudaBackend::embedding_forward(const int32_t* ids, const Tensor& table, const Tensor& out) {
  const int64_t V = table.size(0), d = table.size(1), T = out.size(0);
  MS_DASSERT(out.size(1) == d);
  if (T == 0) return;
  check_ids(ids, T, V);
  const int32_t* dids = upload_ints(kIds, ids, T);
  dispatch_dtype(table.dtype, "embedding", [&](auto tt) {
    dispatch_dtype(out.dtype, "embedding", [&](auto to) {
      using TT = decltype(tt);
      using TO = decltype(to);
      embedding_forward_kernel<<<static_cast<unsigned>(T), 256>>>(dids, static_cast<const TT*>(table.data), d,
                                                                  static_cast<TO*>(out.data));
    });
  });
  MS_CUDA_LAUNCH_CHECK();
}

void CudaBackend::embedding_backward(const int32_t* ids, const Tensor& dout, const Tensor& dtable,
                                     int64_t padding_idx) {
  const int64_t V = dtable.size(0), d = dtable.size(1), T = dout.size(0);
  MS_DASSERT(dout.size(1) == d);
  if (T == 0) return;
  check_ids(ids, T, V);
  check_padding_idx(padding_idx, V);
  // Counting sort of the positions by id, padding_idx left out:
  // csr = [uniq (U) | offsets (U + 1) | order (N)].
  std::vector<int32_t> order;
  order.reserve(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t)
    if (ids[t] != padding_idx) order.push_back(static_cast<int32_t>(t));
  if (order.empty()) return;
  const int64_t N = static_cast<int64_t>(order.size());
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return ids[a] < ids[b]; });
  std::vector<int32_t> csr;
  csr.reserve(static_cast<size_t>(3 * N + 1));
  std::vector<int32_t> offsets;
  for (int64_t k = 0; k < N; ++k) {
    if (k == 0 || ids[order[static_cast<size_t>(k)]] != ids[order[static_cast<size_t>(k - 1)]]) {
      csr.push_back(ids[order[static_cast<size_t>(k)]]);
      offsets.push_back(static_cast<int32_t>(k));
    }
  }
  const int64_t U = static_cast<int64_t>(csr.size());
  offsets.push_back(static_cast<int32_t>(N));
  csr.insert(csr.end(), offsets.begin(), offsets.end());
  csr.insert(csr.end(), order.begin(), order.end());
  const int32_t* dcsr = upload_ints(kCsr, csr.data(), static_cast<int64_t>(csr.size()));
  const dim3 grid(static_cast<unsigned>(U), static_cast<unsigned>((d + 255) / 256));
  dispatch_dtype(dout.dtype, "embedding", [&](auto tg) {
    dispatch_dtype(dtable.dtype, "embedding", [&](auto tt) {
      using TG = decltype(tg);
      using TT = decltype(tt);
      embedding_backward_kernel<<<grid, 256>>>(dcsr, dcsr + U, dcsr + 2 * U + 1,
                                               static_cast<const TG*>(dout.data), d,
                                               static_cast<TT*>(dtable.data));
    });
  });
  MS_CUDA_LAUNCH_CHECK();
}

}  // namespace miniseq::cuda
