#include "miniseq/train/optimizer.h"

#include <algorithm>
#include <cmath>

#include "miniseq/core/stochastic_rounding.h"

namespace miniseq {

// Allocation order (m, v, master) = the planner's (model/planner.cpp plan_run).
AdamW::AdamW(MemoryPlan& plan, const std::vector<ParamSpec>& specs, DType moments, DType params,
             bool master_weights, uint64_t seed)
    : m_(plan, specs, moments, MemCategory::Optimizer, "exp_avg:"),
      v_(plan, specs, moments, MemCategory::Optimizer, "exp_avg_sq:"),
      seed_(seed) {
  if (params != DType::F32 && master_weights)
    master_.emplace(plan, specs, DType::F32, MemCategory::Optimizer, "master:");
}

void AdamW::round_weights(Backend& be, const ParamSet& weights) const {
  if (!master_ && be.weight_precision() != DType::F32)
    weights.for_each([&](const ParamSpec&, const Tensor& w) { be.round_to_precision(w, be.weight_precision()); });
}

void AdamW::reset(Backend& be, const ParamSet& weights) {
  zero(be);
  if (master_)
    for (size_t i = 0; i < weights.size(); ++i) be.copy((*master_)[i], weights[i]);
  round_weights(be, weights);
}

void AdamW::weights_from_master(Backend& be, const ParamSet& weights) {
  if (master_)
    for (size_t i = 0; i < weights.size(); ++i) be.copy(weights[i], (*master_)[i]);
  round_weights(be, weights);
}

void AdamW::zero(Backend& be) {
  m_.for_each([&](const ParamSpec&, const Tensor& t) { be.fill_zero(t); });
  v_.for_each([&](const ParamSpec&, const Tensor& t) { be.fill_zero(t); });
}

bool AdamW::decays(const ParamSpec& s) {
  switch (s.role) {
    case ParamRole::InputNorm:
    case ParamRole::QNorm:
    case ParamRole::KNorm:
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

double AdamW::clip_factor(double norm, double max_norm) {
  // torch.nn.utils.clip_grad_norm_: coef = max_norm / (total_norm + 1e-6), applied only when below 1.
  return max_norm > 0.0 ? std::min(1.0, max_norm / (norm + 1e-6)) : 1.0;
}

void AdamW::update(Backend& be, const ParamSpec& spec, const Tensor& weight, const Tensor& grad,
                   const AdamWHyper& h) {
  AdamWParams p;
  p.lr = h.lr;
  p.beta1 = h.beta1;
  p.beta2 = h.beta2;
  p.eps = h.eps;
  p.weight_decay = decays(spec) ? h.weight_decay : 0.0;
  p.step = h.step;
  p.grad_scale = static_cast<float>(h.clip);
  p.rounding_stream = sr::stream(seed_, static_cast<uint64_t>(h.step), sr::name_key(spec.name));
  be.adamw_step(weight, grad, m_.get(spec.name), v_.get(spec.name), p, master_ ? &master_->get(spec.name) : nullptr);
}

void AdamW::step(Backend& be, const ParamSet& weights, const ParamSet& grads, const AdamWHyper& h) {
  for (size_t i = 0; i < weights.size(); ++i) update(be, weights.specs()[i], weights[i], grads[i], h);
}

uint64_t GradNormSink::consume(const std::vector<const ParamSpec*>& specs, const std::vector<Tensor>& grads) {
  for (size_t i = 0; i < specs.size(); ++i) sum_sq_[specs[i]->name] = be_.sum_squares(grads[i]);
  return 0;
}

double GradNormSink::norm(const ParamSet& weights) const {
  double sq = 0.0;
  weights.for_each([&](const ParamSpec& s, const Tensor&) {
    auto it = sum_sq_.find(s.name);
    if (it != sum_sq_.end()) sq += it->second;
  });
  return std::sqrt(sq);
}

uint64_t UpdateSink::consume(const std::vector<const ParamSpec*>& specs, const std::vector<Tensor>& grads) {
  GradNormSink::consume(specs, grads);
  uint64_t reads = 0;  // tickets grow: the last copy issued is the last to finish
  for (size_t i = 0; i < specs.size(); ++i) reads = std::max(reads, update_(*specs[i], grads[i]));
  return reads;
}

}  // namespace miniseq
