// Device helpers shared by the CUDA op files: dtype access (bf16/fp32 storage, fp32 math), launch sizes and
// deterministic block reductions (fixed tree order: the same inputs give the same bits on every run).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>

#include "miniseq/backend/cuda/cuda_check.h"
#include "miniseq/core/tensor.h"

namespace miniseq::cuda {

using bf16 = __nv_bfloat16;

// Storage <-> fp32. Stores round to nearest even (as f32_to_bf16 on the host).
__device__ __forceinline__ float to_f32(float x) {
  return x;
}
__device__ __forceinline__ float to_f32(bf16 x) {
  return __bfloat162float(x);
}
template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16 from_f32<bf16>(float x) {
  return __float2bfloat16_rn(x);
}

__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) {
  return a < b ? a : b;
}

inline unsigned grid_for(int64_t n, int threads, int64_t max_blocks = 65535LL * 8) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > max_blocks) b = max_blocks;
  return static_cast<unsigned>(b);
}

// Sum over a block of blockDim.x threads (a multiple of 32, at most 1024). Every thread gets the result.
// The order of additions depends only on blockDim, so results are bitwise reproducible.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* smem /* >= 32 */) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  __syncthreads();  // smem may still be read by a previous call
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  T r = lane < nwarps ? smem[lane] : T(0);
  for (int o = 16; o > 0; o >>= 1) r += __shfl_xor_sync(0xffffffffu, r, o);
  return r;
}

template <typename T>
__device__ __forceinline__ T block_max(T v, T* smem) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  T r = lane < nwarps ? smem[lane] : T(-INFINITY);
  for (int o = 16; o > 0; o >>= 1) r = fmaxf(r, __shfl_xor_sync(0xffffffffu, r, o));
  return r;
}

// Calls f.template operator()<T>() with T the storage type of `t` (F32 or BF16; F16 is not a CUDA storage
// type).
template <typename F>
void dispatch_dtype(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32:
      f(float{});
      return;
    case DType::BF16:
      f(bf16{});
      return;
    default:
      fail("CUDA ", op, ": dtype ", dtype_name(t), " is not supported (F32 or BF16)");
  }
}

// Debugging a faulting kernel: with MINISEQ_CUDA_SYNC=1 in the environment every launch check also waits for
// the kernel, so an illegal access is reported at the launch that made it (file:line), not at a later call.
inline bool sync_after_launch() {
  static const bool on = [] {
    const char* v = std::getenv("MINISEQ_CUDA_SYNC");
    return v && v[0] == '1';
  }();
  return on;
}

// After each kernel launch: launch-configuration errors always, execution errors too with MINISEQ_CUDA_SYNC=1.
#define MS_CUDA_LAUNCH_CHECK()                                                      \
  do {                                                                              \
    MS_CUDA_CHECK(cudaGetLastError());                                              \
    if (::miniseq::cuda::sync_after_launch()) MS_CUDA_CHECK(cudaDeviceSynchronize()); \
  } while (0)

}  // namespace miniseq::cuda
