// The dry backend: every op is a no-op. Running the model's real step schedule with it on a dry memory plan gives
// the exact sequence of allocations (and so the planned peak) without touching memory or computing anything.
#pragma once

#include "miniseq/ops/backend.h"

namespace miniseq {

class DryBackend final : public Backend {
 public:
  // Plans for `device` with the given storage dtypes (e.g. the CUDA backend's BF16 on a machine without a GPU).
  explicit DryBackend(Device device = Device::CPU, DType params = DType::F32, DType grads = DType::F32,
                      DType activations = DType::F32)
      : device_(device), params_(params), grads_(grads), acts_(activations) {}
  Device device() const override { return device_; }
  // The free device memory reported to a run's budget check (planning "as if" on a device of that size).
  void set_free_bytes(size_t bytes) { free_bytes_ = bytes; }
  size_t device_free_bytes() const override { return free_bytes_; }
  // Planning for CUDA includes the CUDA backend's per-call scratch.
  size_t scratch_bytes(const ScratchShape& s) const override {
    return device_ == Device::CUDA ? cuda_scratch_layout(s).total : 0;
  }
  DType param_dtype() const override { return params_; }
  DType grad_dtype() const override { return grads_; }
  DType activation_dtype() const override { return acts_; }
  void embedding_forward(const int32_t*, const Tensor&, const Tensor&) override {}
  void embedding_backward(const int32_t*, const Tensor&, const Tensor&, int64_t) override {}
  void rmsnorm_forward(const Tensor&, const Tensor&, float, const Tensor&, const Tensor&) override {}
  void rmsnorm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor*,
                        bool) override {}
  void linear_forward(const Tensor&, const Tensor&, const Tensor*, const Tensor&) override {}
  void linear_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor*, const Tensor*,
                       bool) override {}
  // As the CPU and CUDA backends: the LoRA branch needs no workspace beyond the plan's xa / dxa.
  int64_t lora_workspace_elems(int64_t, int64_t) const override { return 0; }
  void lora_linear_forward(const Tensor&, const Tensor&, const Tensor*, const LoraBranch&, const Tensor&) override {}
  void lora_linear_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor*, const Tensor*,
                            const LoraBranch&, bool) override {}
  void rope_forward(const Tensor&, const int32_t*, const RopeParams&) override {}
  void rope_backward(const Tensor&, const int32_t*, const RopeParams&) override {}
  void attention_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                         const AttentionParams&) override {}
  void attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                          const Tensor&, const Tensor&, const Tensor&, const AttentionParams&) override {}
  void swiglu_forward(const Tensor&, const Tensor&, const Tensor&) override {}
  void swiglu_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&) override {}
  double cross_entropy_forward_backward(const Tensor&, const int32_t*, float) override { return 0.0; }
  CrossEntropyStats cross_entropy_forward(const Tensor&, const int32_t*) override { return {}; }
  void add_inplace(const Tensor&, const Tensor&) override {}
  void scale_inplace(const Tensor&, float) override {}
  void fill_zero(const Tensor&) override {}
  void copy(const Tensor&, const Tensor&) override {}
  void copy_columns(const Tensor&, int64_t, const Tensor&, int64_t, int64_t) override {}
  double sum_squares(const Tensor&) override { return 0.0; }
  void adamw_step(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const AdamWParams&,
                  const Tensor*) override {}

 private:
  Device device_;
  DType params_, grads_, acts_;
  size_t free_bytes_ = 0;
};

}  // namespace miniseq
