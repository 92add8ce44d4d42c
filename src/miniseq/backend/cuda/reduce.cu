// The second stage of the deterministic column reductions (RMSNorm dw, bias grads): out[c] += Σ_b partials[b,
// c], summed in block order by one thread per column.
#include "miniseq/backend/cuda/common.cuh"
#include "miniseq/backend/cuda/cuda_ops.h"

namespace miniseq::cuda {

namespace {
template <typename T>
__global__ void column_sums_kernel(const float* partials, int64_t nblocks, int64_t cols, T* out) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  float s = 0.0f;
  for (int64_t b = 0; b < nblocks; ++b) s += partials[b * cols + c];
  out[c] = from_f32<T>(to_f32(out[c]) + s);
}
}  // namespace

void CudaBackend::column_sums_finish(const float* partials, int64_t nblocks, int64_t cols,
                                     const Tensor& out) {
  MS_DASSERT(out.numel() == cols);
  dispatch_dtype(out.dtype, "column sums", [&](auto to) {
    using T = decltype(to);
    column_sums_kernel<<<grid_for(cols, 256), 256>>>(partials, nblocks, cols, static_cast<T*>(out.data));
  });
  MS_CUDA_LAUNCH_CHECK();
}

}  // namespace miniseq::cuda
