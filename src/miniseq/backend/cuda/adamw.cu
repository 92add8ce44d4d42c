// AdamW exactly as the CPU backend (backend/cpu/adamw.cpp, torch.optim.AdamW): scalars in double on the host,
// rounded to fp32; per element in fp32 with IEEE sqrt and division (nvcc's defaults without --use_fast_math).
// bf16 parameters are updated through their fp32 master copy (allocated by the optimizer in the memory plan)
// and then rounded to bf16: an update of lr·m/√v ≈ 2e-5 is below half a bf16 ulp of most weights and would
// otherwise be lost. Without a master (--master_weights False) the bf16 parameter is widened, updated in fp32
// and stored with stochastic rounding, element i with the counter-based bits sr::bits16(p.rounding_stream,
// i): the same bits as on the CPU (core/stochastic_rounding.h). Moments are fp32 or bf16 (widened, updated,
// used in fp32, stored rounded), as on the CPU.
#include <cmath>

#include "miniseq/backend/cuda/common.cuh"
#include "miniseq/backend/cuda/cuda_ops.h"
#include "miniseq/core/stochastic_rounding.h"

namespace miniseq::cuda {

namespace {

struct AdamScalars {
  float step_size, bc2_sqrt, decay, w1, w2, b2, eps, gs;
  uint64_t rounding_stream;
};

// The stored weight of element i: fp32 exactly; bf16 rounded stochastically (no master copy).
__device__ __forceinline__ float store_weight(float w, float*, uint64_t, int64_t) {
  return w;
}
__device__ __forceinline__ bf16 store_weight(float w, bf16*, uint64_t stream, int64_t i) {
  __nv_bfloat16_raw raw;
  raw.x = sr::f32_to_bf16_stochastic(w, sr::bits16(stream, static_cast<uint64_t>(i)));
  return bf16(raw);
}

// TW: the weights the update runs on (fp32 master, fp32 param, or bf16 param without master); TP: the param
// that receives the master's result rounded to nearest (only with a master).
template <typename TG, typename TM, typename TW, typename TP>
__global__ void adamw_kernel(TW* exact, TP* param_out, const TG* grad, TM* m, TM* v, int64_t n,
                             AdamScalars s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = to_f32(grad[i]) * s.gs;
    const float w = to_f32(exact[i]) * s.decay;
    const float m0 = to_f32(m[i]);
    const float mi = m0 + s.w1 * (g - m0);
    const float vi = to_f32(v[i]) * s.b2 + s.w2 * (g * g);
    m[i] = from_f32<TM>(mi);
    v[i] = from_f32<TM>(vi);
    const float p = w - s.step_size * (mi / (sqrtf(vi) / s.bc2_sqrt + s.eps));
    exact[i] = store_weight(p, exact, s.rounding_stream, i);
    if (param_out) param_out[i] = from_f32<TP>(p);
  }
}

}  // namespace

void CudaBackend::set_precision(DType weights, DType grads) {
  MS_CHECK(weights == DType::BF16,
           "the CUDA backend keeps bf16 weights (with or without the fp32 master copy: "
           "--master_weights); it cannot train ",
           dtype_name(weights), " weights");
  MS_CHECK(grads == DType::F32 || grads == DType::BF16, "the CUDA backend keeps F32 or BF16 gradients, not ",
           dtype_name(grads));
  grads_ = grads;
}

void CudaBackend::adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                             const AdamWParams& p, const Tensor* master) {
  const int64_t n = param.numel();
  MS_DASSERT(grad.numel() == n && m.numel() == n && v.numel() == n && p.step >= 1);
  MS_CHECK(m.dtype == v.dtype && (m.dtype == DType::F32 || m.dtype == DType::BF16),
           "CUDA adamw_step: the moments must be both F32 or both BF16");
  MS_CHECK(param.dtype == DType::F32 || param.dtype == DType::BF16, "CUDA adamw_step: a ",
           dtype_name(param.dtype), " parameter cannot be updated (F32 or BF16)");
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
  s.rounding_stream = p.rounding_stream;
  dispatch_dtype(grad.dtype, "adamw", [&](auto tg) {
    using TG = decltype(tg);
    dispatch_dtype(m.dtype, "adamw moments", [&](auto tm) {
      using TM = decltype(tm);
      dispatch_dtype(param.dtype, "adamw param", [&](auto tp) {
        using TP = decltype(tp);
        if (master)
          adamw_kernel<<<grid_for(n, 256), 256>>>(
              static_cast<float*>(master->data), static_cast<TP*>(param.data),
              static_cast<const TG*>(grad.data), static_cast<TM*>(m.data), static_cast<TM*>(v.data), n, s);
        else  // the param itself: fp32 exactly, or bf16 with stochastic rounding
          adamw_kernel<<<grid_for(n, 256), 256>>>(static_cast<TP*>(param.data), static_cast<float*>(nullptr),
                                                  static_cast<const TG*>(grad.data), static_cast<TM*>(m.data),
                                                  static_cast<TM*>(v.data), n, s);
      });
    });
  });
  MS_CUDA_LAUNCH_CHECK();
}

}  // namespace miniseq::cuda
