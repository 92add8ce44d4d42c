// Op families whose CPU implementation has not landed yet (issue 3). Each fails loudly if called; the file is
// deleted when the last one moves into its own op-family file.
#include "miniseq/backend/cpu/cpu_backend.h"

namespace miniseq {

#define MS_PENDING(op) fail("CPU op '" op "' is not implemented yet")

void CpuBackend::embedding_forward(const int32_t*, const Tensor&, const Tensor&) { MS_PENDING("embedding_forward"); }
void CpuBackend::embedding_backward(const int32_t*, const Tensor&, const Tensor&) { MS_PENDING("embedding_backward"); }
void CpuBackend::rmsnorm_forward(const Tensor&, const Tensor&, float, const Tensor&, const Tensor&) {
  MS_PENDING("rmsnorm_forward");
}
void CpuBackend::rmsnorm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                  const Tensor&, bool) {
  MS_PENDING("rmsnorm_backward");
}
void CpuBackend::linear_forward(const Tensor&, const Tensor&, const Tensor*, const Tensor&) {
  MS_PENDING("linear_forward");
}
void CpuBackend::linear_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor*,
                                 const Tensor*, bool) {
  MS_PENDING("linear_backward");
}
void CpuBackend::rope_forward(const Tensor&, const int32_t*, const RopeParams&) { MS_PENDING("rope_forward"); }
void CpuBackend::rope_backward(const Tensor&, const int32_t*, const RopeParams&) { MS_PENDING("rope_backward"); }
void CpuBackend::attention_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                   const AttentionParams&) {
  MS_PENDING("attention_forward");
}
void CpuBackend::attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                    const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                    const AttentionParams&) {
  MS_PENDING("attention_backward");
}
void CpuBackend::swiglu_forward(const Tensor&, const Tensor&, const Tensor&) { MS_PENDING("swiglu_forward"); }
void CpuBackend::swiglu_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&) {
  MS_PENDING("swiglu_backward");
}
double CpuBackend::cross_entropy_forward_backward(const Tensor&, const int32_t*, float) {
  MS_PENDING("cross_entropy_forward_backward");
}
void CpuBackend::adamw_step(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const AdamWParams&) {
  MS_PENDING("adamw_step");
}

}  // namespace miniseq
