// AdamW over the parameter table: moments (category optimizer, fp32 or bf16) laid out like the weights, weight
// decay on every parameter but biases and norm weights (Hugging Face Trainer's decay groups), global-norm clipping
// as torch.nn.utils.clip_grad_norm_. Also usable inside the backward pass (optimizer in backward): sinks that take
// each gradient group as soon as it is complete.
#pragma once

#include <functional>
#include <map>
#include <optional>

#include "miniseq/model/decoder.h"
#include "miniseq/ops/backend.h"

namespace miniseq {

struct AdamWHyper {
  double lr = 0.0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  int64_t step = 1;   // 1-based (bias correction)
  double clip = 1.0;  // gradient scale from global-norm clipping
};

class AdamW {
 public:
  // `params`: the weights' dtype. Other than F32 (the CUDA backend's bf16), the optimizer keeps fp32 master weights
  // in the plan (category optimizer) and updates those; the weights get the result rounded. With `master_weights`
  // false (--master_weights False) there is no master: the backend's bf16 weights (weight_precision()) are updated
  // in place with stochastic rounding, its bits drawn from (seed, step, parameter name) (core/stochastic_rounding.h),
  // so a run is reproducible and a resume needs nothing beyond the step.
  AdamW(MemoryPlan& plan, const std::vector<ParamSpec>& specs, DType moments = DType::F32,
        DType params = DType::F32, bool master_weights = true, uint64_t seed = 0);

  const ParamSet& exp_avg() const { return m_; }
  const ParamSet& exp_avg_sq() const { return v_; }
  bool has_master() const { return master_.has_value(); }
  const ParamSet& master() const { return *master_; }
  void zero(Backend& be);  // moments only
  // A fresh run: moments zero and the master weights (if any) from the weights; without a master, weights of bf16
  // precision are rounded to it (nearest even) where the backend emulates it (the CPU's fp32 buffers).
  void reset(Backend& be, const ParamSet& weights);
  // The weights from the master weights (after a checkpoint was loaded into them), or rounded as in reset.
  void weights_from_master(Backend& be, const ParamSet& weights);

  // Global L2 norm of all gradients (computed in double).
  static double grad_norm(Backend& be, const ParamSet& grads);
  // torch's clip factor: min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0.
  static double clip_factor(double norm, double max_norm);
  // Updates every parameter (gradients already complete).
  void step(Backend& be, const ParamSet& weights, const ParamSet& grads, const AdamWHyper& h);
  // Updates one parameter by its Hugging Face name.
  void update(Backend& be, const ParamSpec& spec, const Tensor& weight, const Tensor& grad, const AdamWHyper& h);

  // Hugging Face's rule: no decay for biases and normalization weights.
  static bool decays(const ParamSpec& s);

 private:
  // Without a master: the loaded weights rounded to the backend's weight precision.
  void round_weights(Backend& be, const ParamSet& weights) const;

  ParamSet m_, v_;
  std::optional<ParamSet> master_;
  uint64_t seed_;
};

// Optimizer in backward, pass 1: the squared norm of every gradient as its group completes. norm() sums them in
// the parameter table's order, as AdamW::grad_norm does, so both give the same bits.
class GradNormSink : public GradSink {
 public:
  explicit GradNormSink(Backend& be) : be_(be) {}
  uint64_t consume(const std::vector<const ParamSpec*>& specs, const std::vector<Tensor>& grads) override;
  double norm(const ParamSet& weights) const;

 protected:
  Backend& be_;
  std::map<std::string, double> sum_sq_;
};

// Optimizer in backward: each gradient group is handed to `update(spec, grad)` as soon as it is complete,
// after its norm is recorded for the log (the device AdamW or the host optimizer updates the parameter).
// `update` returns the ticket of a copy still reading the gradient (the host optimizer's download), 0 when
// none.
class UpdateSink : public GradNormSink {
 public:
  using Update = std::function<uint64_t(const ParamSpec& spec, const Tensor& grad)>;
  UpdateSink(Backend& be, Update update) : GradNormSink(be), update_(std::move(update)) {}
  uint64_t consume(const std::vector<const ParamSpec*>& specs, const std::vector<Tensor>& grads) override;

 private:
  Update update_;
};

}  // namespace miniseq
