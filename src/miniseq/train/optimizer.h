// AdamW over the parameter table: fp32 moments (category optimizer) laid out like the weights, weight decay on
// every parameter but biases and norm weights (Hugging Face Trainer's decay groups), global-norm clipping as
// torch.nn.utils.clip_grad_norm_.
#pragma once

#include "miniseq/model/params.h"
#include "miniseq/ops/backend.h"

namespace miniseq {

class AdamW {
 public:
  AdamW(MemoryPlan& plan, const std::vector<ParamSpec>& specs);

  const ParamSet& exp_avg() const { return m_; }
  const ParamSet& exp_avg_sq() const { return v_; }
  void zero(Backend& be);

  // Global L2 norm of all gradients (computed in double).
  static double grad_norm(Backend& be, const ParamSet& grads);
  // One update with learning rate `lr`; step is 1-based (bias correction). Gradients are first scaled by
  // clip = min(1, max_norm / (norm + 1e-6)) when max_norm > 0. Returns the clip factor used.
  double step(Backend& be, const ParamSet& weights, const ParamSet& grads, double lr, int64_t step, double norm,
              double max_norm, double weight_decay, double beta1, double beta2, double eps);

  // Hugging Face's rule: no decay for biases and normalization weights.
  static bool decays(const ParamSpec& s);

 private:
  ParamSet m_, v_;
};

}  // namespace miniseq
