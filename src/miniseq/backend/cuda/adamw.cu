// AdamW exactly as the CPU backend (backend/cpu/adamw.cpp, torch.optim.AdamW): scalars in double on the host,
// rounded to fp32; per element in fp32 with IEEE sqrt and division (nvcc's defaults without --use_fast_math).
// bf16 parameters are updated through their fp32 master copy (allocated by the optimizer in the memory plan) and
// then rounded to bf16: an update of lr·m/√v ≈ 2e-5 is below half a bf16 ulp of most weights and would otherwise be
// lost. Moments are fp32 or bf16 (widened, updated, used in fp32, stored rounded), as on the CPU.
#include <cmath>

#include "miniseq/backend/cuda/common.cuh"
#include "miniseq/backend/cuda/cuda_ops.h"

namespace miniseq::cuda {

namespace {

struct AdamScalars {
  float step_size, bc2_sqrt, decay, w1, w2, b2, eps, gs;
};

template <typename TG, typename TM, typename TP>
__global__ void adamw_kernel(float* master, TP* param_out, const TG* grad, TM* m, TM* v, int64_t n, AdamScalars s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = to_f32(grad[i]) * s.gs;
    const float w = master[i] * s.decay;
    const float m0 = to_f32(m[i]);
    const float mi = m0 + s.w1 * (g - m0);
    const float vi = to_f32(v[i]) * s.b2 + s.w2 * (g * g);
    m[i] = from_f32<TM>(mi);
    v[i] = from_f32<TM>(vi);
    const float p = w - s.step_size * (mi / (sqrtf(vi) / s.bc2_sqrt + s.eps));
    master[i] = p;
    if (param_out) param_out[i] = from_f32<TP>(p);
  }
}


}  // namespace

void CudaBackend::adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                             const AdamWParams& p, const Tensor* master) {
  const int64_t n = param.numel();
  MS_DASSERT(grad.numel() == n && m.numel() == n && v.numel() == n && p.step >= 1);
  MS_CHECK(m.dtype == v.dtype && (m.dtype == DType::F32 || m.dtype == DType::BF16),
           "CUDA adamw_step: the moments must be both F32 or both BF16");
  MS_CHECK(master || param.dtype == DType::F32, "CUDA adamw_step: a ", dtype_name(param.dtype),
           " parameter needs its fp32 master copy (the optimizer allocates it in the memory plan)");
  MS_CHECK(!master || (master->dtype == DType::F32 && master->numel() == n),
           "CUDA adamw_step: the master copy must be F32 of the parameter's size");
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
  float* exact = static_cast<float*>(master ? master->data : param.data);
  dispatch_dtype(grad.dtype, "adamw", [&](auto tg) {
    using TG = decltype(tg);
    dispatch_dtype(m.dtype, "adamw moments", [&](auto tm) {
      using TM = decltype(tm);
      dispatch_dtype(param.dtype, "adamw param", [&](auto tp) {
        using TP = decltype(tp);
        adamw_kernel<<<grid_for(n, 256), 256>>>(exact, master ? static_cast<TP*>(param.data) : nullptr,
                                                static_cast<const TG*>(grad.data), static_cast<TM*>(m.data),
                                                static_cast<TM*>(v.data), n, s);
      });
    });
  });
  MS_CUDA_LAUNCH_CHECK();
}

}  // namespace miniseq::cuda
