// AdamW exactly as the CPU backend (backend/cpu/adamw.cpp, torch.optim.AdamW): scalars in double on the host,
// rounded to fp32; per element in fp32 with IEEE sqrt and division (nvcc's defaults without --use_fast_math).
// bf16 parameters are updated through an fp32 master copy held by the backend (created from the bf16 values
// on the first step of each parameter), then rounded to bf16: an update of lr·m/√v ≈ 2e-5 is below half a
// bf16 ulp of most weights and would otherwise be lost.
#include <cmath>

#include "miniseq/backend/cuda/common.cuh"
#include "miniseq/backend/cuda/cuda_ops.h"

namespace miniseq::cuda {

namespace {

struct AdamScalars {
  float step_size, bc2_sqrt, decay, w1, w2, b2, eps, gs;
};

template <typename TG>
__global__ void adamw_kernel(float* master, bf16* param_bf16, const TG* grad, float* m, float* v, int64_t n,
                             AdamScalars s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = to_f32(grad[i]) * s.gs;
    const float w = master[i] * s.decay;
    const float mi = m[i] + s.w1 * (g - m[i]);
    const float vi = v[i] * s.b2 + s.w2 * (g * g);
    m[i] = mi;
    v[i] = vi;
    const float p = w - s.step_size * (mi / (sqrtf(vi) / s.bc2_sqrt + s.eps));
    master[i] = p;
    if (param_bf16) param_bf16[i] = __float2bfloat16_rn(p);
  }
}

__global__ void bf16_to_f32_kernel(const bf16* src, float* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = __bfloat162float(src[i]);
}

}  // namespace

void CudaBackend::adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                             const AdamWParams& p) {
  const int64_t n = param.numel();
  MS_DASSERT(grad.numel() == n && m.numel() == n && v.numel() == n && p.step >= 1);
  MS_CHECK(m.dtype == DType::F32 && v.dtype == DType::F32, "CUDA adamw_step: the moments must be F32");
  if (n == 0) return;
  const double bc1 = 1.0 - std::pow(p.beta1, static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(p.beta2, static_cast<double>(p.step));
  AdamScalars s;
  s.step_size = static_cast<float>(p.lr / bc1);
  s.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  s.decay = static_cast<float>(1.0 - p.lr * p.weight_decay);
  s.w1 = static_cast<float>(1.0 - p.beta1);
  s.w2 = static_cast<float>(1.0 - p.beta2);
  s.b2 = static_cast<float>(p.beta2);
  s.eps = static_cast<float>(p.eps);
  s.gs = p.grad_scale;

  float* master = nullptr;
  bf16* pbf = nullptr;
  if (param.dtype == DType::F32) {
    master = static_cast<float*>(param.data);
  } else {
    MS_CHECK(param.dtype == DType::BF16, "CUDA adamw_step: parameters must be BF16 or F32");
    pbf = static_cast<bf16*>(param.data);
    Buf& b = masters_[param.data];
    if (b.p == nullptr) {
      MS_CUDA_CHECK(cudaMalloc(&b.p, static_cast<size_t>(n) * sizeof(float)));
      b.bytes = static_cast<size_t>(n) * sizeof(float);
      bf16_to_f32_kernel<<<grid_for(n, 256), 256>>>(pbf, static_cast<float*>(b.p), n);
      MS_CUDA_LAUNCH_CHECK();
    }
    MS_CHECK(b.bytes == static_cast<size_t>(n) * sizeof(float),
             "internal: CUDA adamw master copy size changed");
    master = static_cast<float*>(b.p);
  }
  dispatch_dtype(grad.dtype, "adamw", [&](auto tg) {
    using TG = decltype(tg);
    adamw_kernel<<<grid_for(n, 256), 256>>>(master, pbf, static_cast<const TG*>(grad.data),
                                            static_cast<float*>(m.data), static_cast<float*>(v.data), n, s);
  });
  MS_CUDA_LAUNCH_CHECK();
}

}  // namespace miniseq::cuda
