// Elementwise ops and reductions on device tensors (F32 or BF16 storage, fp32 math); copy converts dtypes.
// sum_squares: per-block partial sums in double over a grid fixed by the size, summed on the host in block
// order.
#include "miniseq/backend/cuda/common.cuh"
#include "miniseq/backend/cuda/cuda_ops.h"
#include "miniseq/ops/copy_columns_check.h"

namespace miniseq::cuda {

namespace {

constexpr int kThreads = 256;

template <typename TY, typename TX>
__global__ void add_kernel(TY* y, const TX* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_f32<TY>(to_f32(y[i]) + to_f32(x[i]));
}

template <typename T>
__global__ void scale_kernel(T* y, float s, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_f32<T>(to_f32(y[i]) * s);
}

template <typename TD, typename TS>
__global__ void convert_kernel(TD* dst, const TS* src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = from_f32<TD>(to_f32(src[i]));
}

constexpr int kSumBlocks = 1024;  // fixed: the partials' order does not depend on the device

template <typename T>
__global__ void sum_squares_kernel(const T* x, int64_t n, double* partials) {
  __shared__ double red[32];
  double s = 0.0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const double v = to_f32(x[i]);
    s += v * v;
  }
  s = block_sum(s, red);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

}  // namespace

void CudaBackend::add_inplace(const Tensor& y, const Tensor& x) {
  MS_DASSERT(y.numel() == x.numel());
  const int64_t n = y.numel();
  if (n == 0) return;
  dispatch_dtype(y.dtype, "add_inplace", [&](auto ty) {
    dispatch_dtype(x.dtype, "add_inplace", [&](auto tx) {
      using TY = decltype(ty);
      using TX = decltype(tx);
      add_kernel<<<grid_for(n, kThreads), kThreads>>>(static_cast<TY*>(y.data),
                                                      static_cast<const TX*>(x.data), n);
    });
  });
  MS_CUDA_LAUNCH_CHECK();
}

void CudaBackend::scale_inplace(const Tensor& y, float s) {
  const int64_t n = y.numel();
  if (n == 0) return;
  dispatch_dtype(y.dtype, "scale_inplace", [&](auto ty) {
    using T = decltype(ty);
    scale_kernel<<<grid_for(n, kThreads), kThreads>>>(static_cast<T*>(y.data), s, n);
  });
  MS_CUDA_LAUNCH_CHECK();
}

void CudaBackend::fill_zero(const Tensor& y) {
  if (y.bytes() > 0) MS_CUDA_CHECK(cudaMemsetAsync(y.data, 0, y.bytes()));
}

void CudaBackend::copy(const Tensor& dst, const Tensor& src) {
  MS_DASSERT(dst.numel() == src.numel());
  const int64_t n = src.numel();
  if (n == 0) return;
  if (dst.dtype == src.dtype) {
    MS_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, src.bytes(), cudaMemcpyDeviceToDevice));
    return;
  }
  dispatch_dtype(dst.dtype, "copy", [&](auto td) {
    dispatch_dtype(src.dtype, "copy", [&](auto ts) {
      using TD = decltype(td);
      using TS = decltype(ts);
      convert_kernel<<<grid_for(n, kThreads), kThreads>>>(static_cast<TD*>(dst.data),
                                                          static_cast<const TS*>(src.data), n);
    });
  });
  MS_CUDA_LAUNCH_CHECK();
}

void CudaBackend::copy_columns(const Tensor& dst, int64_t dst_col, const Tensor& src, int64_t src_col,
                               int64_t cols) {
  check_copy_columns(dst, dst_col, src, src_col, cols);
  const size_t es = dtype_size(dst.dtype);
  if (dst.size(0) == 0 || cols == 0) return;
  MS_CUDA_CHECK(cudaMemcpy2DAsync(static_cast<char*>(dst.data) + static_cast<size_t>(dst_col) * es,
                                  static_cast<size_t>(dst.size(1)) * es,
                                  static_cast<const char*>(src.data) + static_cast<size_t>(src_col) * es,
                                  static_cast<size_t>(src.size(1)) * es, static_cast<size_t>(cols) * es,
                                  static_cast<size_t>(dst.size(0)), cudaMemcpyDeviceToDevice));
}

double CudaBackend::sum_squares(const Tensor& x) {
  const int64_t n = x.numel();
  if (n == 0) return 0.0;
  auto* partials = static_cast<double*>(scratch(kPartials, kSumBlocks * sizeof(double)));
  dispatch_dtype(x.dtype, "sum_squares", [&](auto tx) {
    using T = decltype(tx);
    sum_squares_kernel<<<kSumBlocks, kThreads>>>(static_cast<const T*>(x.data), n, partials);
  });
  MS_CUDA_LAUNCH_CHECK();
  double host[kSumBlocks];
  MS_CUDA_CHECK(cudaMemcpy(host, partials, sizeof host, cudaMemcpyDeviceToHost));
  double s = 0.0;
  for (double v : host) s += v;
  return s;
}

}  // namespace miniseq::cuda
