// The memory policy's bf16 weights and gradients on the CPU backend, emulated: the buffers stay fp32 (the ops
// are fp32 kernels) and hold bf16 values only. Weights are rounded to bf16 when loaded (round_to_precision,
// nearest even, as the CUDA upload) and updated by adamw_step with stochastic rounding (adamw.cpp); a
// gradient is rounded to bf16 after every accumulation into it (store_grad, called by linear.cpp,
// rmsnorm.cpp, embedding.cpp). The results equal bf16 storage with fp32 arithmetic; only the bytes stay
// fp32's.
#include "miniseq/backend/cpu/cpu_backend.h"

namespace miniseq {

namespace {
void round_f32_to_bf16(const Tensor& t) {
  MS_DASSERT(t.dtype == DType::F32);
  float* p = t.f32();
  const int64_t n = t.numel();
#pragma omp parallel for simd schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) p[i] = bf16_to_f32(f32_to_bf16(p[i]));
}
}  // namespace

void CpuBackend::set_precision(DType weights, DType grads) {
  MS_CHECK((weights == DType::F32 || weights == DType::BF16) && (grads == DType::F32 || grads == DType::BF16),
           "the CPU backend trains with F32 or BF16 weights and gradients, not ", dtype_name(weights), " / ",
           dtype_name(grads));
  weight_precision_ = weights;
  grad_precision_ = grads;
}

void CpuBackend::round_to_precision(const Tensor& t, DType precision) {
  if (precision == DType::BF16 && t.dtype == DType::F32)
    round_f32_to_bf16(t);
  else
    Backend::round_to_precision(t, precision);
}

void CpuBackend::store_grad(const Tensor& g) const {
  if (grad_precision_ == DType::BF16) round_f32_to_bf16(g);
}

}  // namespace miniseq
