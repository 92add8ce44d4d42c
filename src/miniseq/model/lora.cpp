#include "miniseq/model/lora.h"

#include <algorithm>
#include <cmath>

#include "miniseq/core/check.h"
#include "miniseq/core/random.h"
#include "miniseq/core/stochastic_rounding.h"

namespace miniseq {

namespace {
constexpr ParamRole kLinearRoles[] = {ParamRole::QProj,   ParamRole::KProj,    ParamRole::VProj,
                                      ParamRole::OProj,   ParamRole::GateProj, ParamRole::UpProj,
                                      ParamRole::DownProj};

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

std::string_view linear_module_name(ParamRole r) {
  switch (r) {
    case ParamRole::QProj:
      return "q_proj";
    case ParamRole::KProj:
      return "k_proj";
    case ParamRole::VProj:
      return "v_proj";
    case ParamRole::OProj:
      return "o_proj";
    case ParamRole::GateProj:
      return "gate_proj";
    case ParamRole::UpProj:
      return "up_proj";
    case ParamRole::DownProj:
      return "down_proj";
    default:
      return "";
  }
}

bool LoraConfig::targets(ParamRole linear) const {
  const std::string_view m = linear_module_name(linear);
  return enabled && !m.empty() &&
         std::find(target_modules.begin(), target_modules.end(), m) != target_modules.end();
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s + ",") {
    if (c == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else if (c != ' ' && c != '\t') {
      cur += c;
    }
  }
  return out;
}

std::string join_list(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& x : v) out += (out.empty() ? "" : ",") + x;
  return out;
}

void validate_lora(const LoraConfig& lora, double dropout, const std::string& where) {
  if (!lora.enabled) return;
  MS_CHECK(lora.r > 0, where, ": the LoRA rank r must be > 0, got ", lora.r);
  MS_CHECK(lora.alpha > 0 && std::isfinite(lora.alpha), where, ": lora_alpha must be > 0, got ", lora.alpha);
  MS_CHECK(
      dropout == 0.0, where, ": lora_dropout ", dropout,
      " is not supported; LongLoRA trains with lora_dropout 0 (the LoRA branch then is exact and needs no "
      "random mask)");
  MS_CHECK(!lora.target_modules.empty(), where, ": no LoRA target modules given");
  for (const auto& m : lora.target_modules) {
    bool known = false;
    for (ParamRole r : kLinearRoles) known |= linear_module_name(r) == m;
    MS_CHECK(known, where, ": unknown LoRA target module '", m,
             "'; use any of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj");
  }
}

std::vector<ParamSpec> lora_specs(const ModelConfig& config, const LoraConfig& lora) {
  std::vector<ParamSpec> out;
  if (!lora.enabled) return out;
  for (const ParamSpec& s : param_specs(config)) {
    if (s.layer < 0 || !lora.targets(s.role)) continue;
    const std::string prefix =
        "base_model.model." + s.name.substr(0, s.name.size() - std::string(".weight").size());
    const int64_t out_dim = s.shape[0], in_dim = s.shape[1];
    out.push_back({prefix + ".lora_A.weight", {lora.r, in_dim}, ParamRole::LoraA, s.layer, s.role});
    out.push_back({prefix + ".lora_B.weight", {out_dim, lora.r}, ParamRole::LoraB, s.layer, s.role});
  }
  return out;
}

std::vector<ParamSpec> model_param_specs(const ModelConfig& config, const LoraConfig& lora) {
  std::vector<ParamSpec> s = param_specs(config);
  for (auto& l : lora_specs(config, lora)) s.push_back(std::move(l));
  return s;
}

namespace {
// The base role a bias belongs to (QBias -> QProj, …), or the role itself.
ParamRole weight_role_of(ParamRole r) {
  switch (r) {
    case ParamRole::QBias:
      return ParamRole::QProj;
    case ParamRole::KBias:
      return ParamRole::KProj;
    case ParamRole::VBias:
      return ParamRole::VProj;
    case ParamRole::OBias:
      return ParamRole::OProj;
    default:
      return r;
  }
}
}  // namespace

std::string peft_param_name(const ParamSpec& base, const LoraConfig& lora) {
  std::string n = "base_model.model." + base.name;
  if (lora.targets(weight_role_of(base.role))) {
    const std::string_view tail = ends_with(n, ".weight") ? ".weight" : ".bias";
    n = n.substr(0, n.size() - tail.size()) + ".base_layer" + std::string(tail);
  }
  return n;
}

bool is_trainable(const ParamSpec& spec, const LoraConfig& lora) {
  if (!lora.enabled || spec.role == ParamRole::LoraA || spec.role == ParamRole::LoraB) return true;
  const std::string n = peft_param_name(spec, lora);
  for (const auto& k : lora.trainable_params)
    if (n.find(k) != std::string::npos) return true;
  return false;
}

std::vector<ParamSpec> trainable_specs(const ModelConfig& config, const LoraConfig& lora) {
  std::vector<ParamSpec> out;
  for (auto& s : model_param_specs(config, lora))
    if (is_trainable(s, lora)) out.push_back(std::move(s));
  // A key that matches nothing is a typo ("embd"): it would train the adapters alone without a word.
  for (const auto& k : lora.trainable_params) {
    bool matched = false;
    for (const auto& s : out)
      matched = matched || (s.role != ParamRole::LoraA && s.role != ParamRole::LoraB &&
                            peft_param_name(s, lora).find(k) != std::string::npos);
    MS_CHECK(matched, "--trainable_params: '", k,
             "' is in the name of no parameter of this model (each key is a substring of names such as "
             "model.embed_tokens.weight, model.layers.0.input_layernorm.weight, model.norm.weight; LongLoRA's "
             "LoRA+ value is embed,norm)");
  }
  return out;
}

void lora_init_values(const ParamSpec& spec, uint64_t seed, float* values) {
  const int64_t n = spec.shape.numel();
  if (spec.role == ParamRole::LoraB) {
    std::fill(values, values + n, 0.0f);
    return;
  }
  MS_CHECK(spec.role == ParamRole::LoraA, "internal: lora_init_values on '", spec.name, "'");
  // kaiming_uniform_(a = √5): gain = √(2 / (1 + a²)) = √(1/3), bound = gain · √(3 / fan_in) = 1 / √fan_in.
  const double bound = 1.0 / std::sqrt(static_cast<double>(spec.shape[1]));
  Rng rng(sr::mix64(seed ^ sr::name_key(spec.name)));
  for (int64_t i = 0; i < n; ++i) values[i] = static_cast<float>((2.0 * rng.uniform() - 1.0) * bound);
}

}  // namespace miniseq
