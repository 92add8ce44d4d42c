// AdamW exactly as torch.optim.AdamW (_single_tensor_adamw / _multi_tensor_adamw, which agree):
//   g ← g·grad_scale
//   p ← p·(1 − lr·wd)                                  decoupled weight decay, first
//   m ← m + (1−β1)·(g − m)                             torch's lerp_(g, 1−β1) for weight < 0.5
//   v ← β2·v + (1−β2)·g²
//   p ← p − (lr / (1−β1^t)) · m / (sqrt(v)/sqrt(1−β2^t) + eps)   eps added AFTER the bias correction of v
// The scalars (1 − β, 1 − lr·wd, bias corrections, lr / bc1) are computed in double as Python does, then
// rounded to fp32 as torch does when it hands them to its fp32 kernels.
// Moments may be stored in bf16 (memory policy): they are widened to fp32, updated, used for this step's
// update in fp32, and stored rounded to nearest even. With a master copy the update runs on it and the param
// gets the result in its own dtype (rounded to nearest even for bf16). Without a master copy, weights of bf16
// precision
// (--master_weights False; fp32 buffers holding bf16 values, precision.cpp) store the fp32 result rounded
// stochastically with the counter-based bits of p.rounding_stream (core/stochastic_rounding.h, the same bits
// as on CUDA), so E[stored] = the fp32 result and updates below half an ulp are not lost.
#include <cmath>

#include "miniseq/backend/cpu/cpu_backend.h"
#include "miniseq/core/stochastic_rounding.h"

namespace miniseq {

void CpuBackend::adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                            const AdamWParams& p, const Tensor* master) {
  const int64_t n = param.numel();
  MS_DASSERT(grad.numel() == n && m.numel() == n && v.numel() == n && p.step >= 1);
  MS_CHECK(master || param.dtype == DType::F32, "adamw_step: a ", dtype_name(param.dtype),
           " parameter needs its fp32 master copy");
  MS_DASSERT(!master || (master->dtype == DType::F32 && master->numel() == n));
  const Tensor& w_exact = master ? *master : param;  // what the update runs on
  const bool stochastic = !master && weight_precision_ == DType::BF16;
  const uint64_t stream = p.rounding_stream;
  // The stored weight: exact, or (bf16 precision without master) rounded stochastically.
  auto store = [stochastic, stream](float w, int64_t i) {
    return stochastic
               ? bf16_to_f32(sr::f32_to_bf16_stochastic(w, sr::bits16(stream, static_cast<uint64_t>(i))))
               : w;
  };
  const double bc1 = 1.0 - std::pow(p.beta1, static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(p.beta2, static_cast<double>(p.step));
  const float step_size = static_cast<float>(p.lr / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float decay = static_cast<float>(1.0 - p.lr * p.weight_decay);
  const float w1 = static_cast<float>(1.0 - p.beta1);
  const float w2 = static_cast<float>(1.0 - p.beta2);
  const float b2 = static_cast<float>(p.beta2), eps = static_cast<float>(p.eps), gs = p.grad_scale;
  float* pp = w_exact.f32();
  const float* pg = grad.f32();
  MS_DASSERT(m.dtype == v.dtype);
  if (m.dtype == DType::BF16) {
    uint16_t* pm = m.u16();
    uint16_t* pv = v.u16();
#pragma omp parallel for simd schedule(static) if (n > (1 << 15))
    for (int64_t i = 0; i < n; ++i) {
      const float g = pg[i] * gs;
      const float w = pp[i] * decay;
      const float m0 = bf16_to_f32(pm[i]);
      const float mi = m0 + w1 * (g - m0);
      const float vi = bf16_to_f32(pv[i]) * b2 + w2 * (g * g);
      pm[i] = f32_to_bf16(mi);
      pv[i] = f32_to_bf16(vi);
      pp[i] = store(w - step_size * (mi / (std::sqrt(vi) / bc2_sqrt + eps)), i);
    }
  } else if (!stochastic) {
    // The common case (fp32 weights and moments), without the stochastic store in the loop body, which kept
    // the compiler from vectorizing it (scalar sqrt and two divisions per element made AdamW compute bound).
    // The same expressions, so the same bits.
    float* pm = m.f32();
    float* pv = v.f32();
#pragma omp parallel for simd schedule(static) if (n > (1 << 15))
    for (int64_t i = 0; i < n; ++i) {
      const float g = pg[i] * gs;
      const float w = pp[i] * decay;
      const float mi = pm[i] + w1 * (g - pm[i]);
      const float vi = pv[i] * b2 + w2 * (g * g);
      pm[i] = mi;
      pv[i] = vi;
      pp[i] = w - step_size * (mi / (std::sqrt(vi) / bc2_sqrt + eps));
    }
  } else {
    float* pm = m.f32();
    float* pv = v.f32();
#pragma omp parallel for simd schedule(static) if (n > (1 << 15))
    for (int64_t i = 0; i < n; ++i) {
      const float g = pg[i] * gs;
      const float w = pp[i] * decay;
      const float mi = pm[i] + w1 * (g - pm[i]);
      const float vi = pv[i] * b2 + w2 * (g * g);
      pm[i] = mi;
      pv[i] = vi;
      pp[i] = store(w - step_size * (mi / (std::sqrt(vi) / bc2_sqrt + eps)), i);
    }
  }
  if (master) copy(param, *master);  // rounded to the param's dtype
}

}  // namespace miniseq
