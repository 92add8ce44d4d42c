#include "miniseq/model/lora_merge.h"

#include <cmath>
#include <string>
#include <vector>

namespace miniseq {

void lora_delta(const float* B, const float* A, int64_t out_dim, int64_t r, int64_t in_dim, float scale,
                float* delta) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < out_dim; ++i) {
    float* d = delta + i * in_dim;
    for (int64_t j = 0; j < in_dim; ++j) d[j] = 0.0f;
    for (int64_t k = 0; k < r; ++k) {
      const float b = B[i * r + k];
      const float* a = A + k * in_dim;
      for (int64_t j = 0; j < in_dim; ++j) d[j] = std::fma(b, a[j], d[j]);
    }
    for (int64_t j = 0; j < in_dim; ++j) d[j] *= scale;
  }
}

namespace {
// "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" ->
// "model.layers.0.self_attn.q_proj.weight"
std::string adapted_weight_name(const std::string& lora_name) {
  const std::string prefix = "base_model.model.";
  std::string n = lora_name.rfind(prefix, 0) == 0 ? lora_name.substr(prefix.size()) : lora_name;
  const size_t at = n.rfind(".lora_");
  return n.substr(0, at) + ".weight";
}
}  // namespace

void merge_lora(const ParamSet& base, const ParamSet& lora_params, const LoraConfig& lora) {
  const float s = lora.scale();
  std::vector<float> delta;
  const auto& specs = lora_params.specs();
  for (size_t i = 0; i < specs.size(); ++i) {
    if (specs[i].role != ParamRole::LoraA) continue;
    MS_CHECK(i + 1 < specs.size() && specs[i + 1].role == ParamRole::LoraB,
             "internal: lora_A without lora_B");
    const Tensor& A = lora_params[i];      // [r, in]
    const Tensor& B = lora_params[i + 1];  // [out, r]
    const std::string target = adapted_weight_name(specs[i].name);
    const Tensor* W = base.find(target);  // [out, in]
    MS_CHECK(W, "merge: the base model has no weight '", target, "' for the adapter's '", specs[i].name, "'");
    MS_CHECK(
        W->dtype == DType::F32 && A.dtype == DType::F32 && B.dtype == DType::F32 && W->device == Device::CPU,
        "internal: merge_lora runs on fp32 CPU tensors");
    const int64_t out = B.size(0), r = A.size(0), in = A.size(1);
    MS_CHECK(W->size(0) == out && W->size(1) == in && B.size(1) == r, "merge: the base weight '", target,
             "' has shape ", W->shape.str(), ", the adapter's lora_B·lora_A is [", out, ", ", in, "]");
    delta.resize(static_cast<size_t>(out * in));
    lora_delta(B.f32(), A.f32(), out, r, in, s, delta.data());
    float* w = W->f32();
    for (int64_t e = 0; e < out * in; ++e) w[e] += delta[static_cast<size_t>(e)];
  }
}

}  // namespace miniseq
