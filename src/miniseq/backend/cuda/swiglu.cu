// SwiGLU activation of the MLP: act = silu(gate)·up, silu(g) = g·σ(g), fp32 math on bf16 storage.
// Backward: σ = 1/(1+e^−g); dgate = dact·up·σ·(1 + g·(1−σ)), dup = dact·silu(g). dgate/dup may alias gate/up:
// each element is read before it is written, by the same thread.
#include "miniseq/backend/cuda/common.cuh"
#include "miniseq/backend/cuda/cuda_ops.h"

namespace miniseq::cuda {

namespace {

template <typename T>
__global__ void swiglu_forward_kernel(const T* gate, const T* up, T* act, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = to_f32(gate[i]);
    act[i] = from_f32<T>(g / (1.0f + expf(-g)) * to_f32(up[i]));
  }
}

template <typename T>
__global__ void swiglu_backward_kernel(const T* dact, const T* gate, const T* up, T* dgate, T* dup,
                                       int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = to_f32(gate[i]), u = to_f32(up[i]), da = to_f32(dact[i]);
    const float sig = 1.0f / (1.0f + expf(-g));
    dgate[i] = from_f32<T>(da * u * (sig * (1.0f + g * (1.0f - sig))));
    dup[i] = from_f32<T>(da * (g * sig));
  }
}

}  // namespace

void CudaBackend::swiglu_forward(const Tensor& gate, const Tensor& up, const Tensor& act) {
  const int64_t n = gate.numel();
  MS_DASSERT(up.numel() == n && act.numel() == n && up.dtype == gate.dtype && act.dtype == gate.dtype);
  if (n == 0) return;
  dispatch_dtype(gate.dtype, "swiglu", [&](auto tg) {
    using T = decltype(tg);
    swiglu_forward_kernel<<<grid_for(n, 256), 256>>>(
        static_cast<const T*>(gate.data), static_cast<const T*>(up.data), static_cast<T*>(act.data), n);
  });
  MS_CUDA_LAUNCH_CHECK();
}

void CudaBackend::swiglu_backward(const Tensor& dact, const Tensor& gate, const Tensor& up,
                                  const Tensor& dgate, const Tensor& dup) {
  const int64_t n = gate.numel();
  MS_DASSERT(up.numel() == n && dact.numel() == n && dgate.numel() == n && dup.numel() == n);
  if (n == 0) return;
  dispatch_dtype(gate.dtype, "swiglu", [&](auto tg) {
    using T = decltype(tg);
    swiglu_backward_kernel<<<grid_for(n, 256), 256>>>(
        static_cast<const T*>(dact.data), static_cast<const T*>(gate.data), static_cast<const T*>(up.data),
        static_cast<T*>(dgate.data), static_cast<T*>(dup.data), n);
  });
  MS_CUDA_LAUNCH_CHECK();
}

}  // namespace miniseq::cuda
