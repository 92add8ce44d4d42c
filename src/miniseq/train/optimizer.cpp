#include "miniseq/train/optimizer.h"

#include <cmath>

namespace miniseq {

AdamW::AdamW(MemoryPlan& plan, const std::vector<ParamSpec>& specs)
    : m_(plan, specs, DType::F32, MemCategory::Optimizer, "exp_avg:"),
      v_(plan, specs, DType::F32, MemCategory::Optimizer, "exp_avg_sq:") {}

void AdamW::zero(Backend& be) {
  m_.for_each([&](const ParamSpec&, const Tensor& t) { be.fill_zero(t); });
  v_.for_each([&](const ParamSpec&, const Tensor& t) { be.fill_zero(t); });
}

bool AdamW::decays(const ParamSpec& s) {
  switch (s.role) {
    case ParamRole::InputNorm:
    case ParamRole::PostAttnNorm:
    case ParamRole::FinalNorm:
    case ParamRole::QBias:
    case ParamRole::KBias:
    case ParamRole::VBias:
    case ParamRole::OBias: return false;
    default: return true;
  }
}

double AdamW::grad_norm(Backend& be, const ParamSet& grads) {
  double sq = 0.0;
  grads.for_each([&](const ParamSpec&, const Tensor& g) { sq += be.sum_squares(g); });
  return std::sqrt(sq);
}

double AdamW::step(Backend& be, const ParamSet& weights, const ParamSet& grads, double lr, int64_t step,
                   double norm, double max_norm, double weight_decay, double beta1, double beta2, double eps) {
  // torch.nn.utils.clip_grad_norm_: coef = max_norm / (total_norm + 1e-6), applied only when below 1.
  double clip = 1.0;
  if (max_norm > 0.0) clip = std::min(1.0, max_norm / (norm + 1e-6));
  for (size_t i = 0; i < weights.size(); ++i) {
    const ParamSpec& s = weights.specs()[i];
    AdamWParams p;
    p.lr = lr;
    p.beta1 = beta1;
    p.beta2 = beta2;
    p.eps = eps;
    p.weight_decay = decays(s) ? weight_decay : 0.0;
    p.step = step;
    p.grad_scale = static_cast<float>(clip);
    be.adamw_step(weights[i], grads[i], m_[i], v_[i], p);
  }
  return clip;
}

}  // namespace miniseq
