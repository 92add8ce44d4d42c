// LoRA (Hu et al. 2021) as PEFT implements it and LongLoRA uses it, and LongLoRA's "LoRA+" trainable set.
//
// A targeted linear y = x·Wᵀ (+ b) becomes y = x·Wᵀ (+ b) + s·(x·Aᵀ)·Bᵀ with A [r, in], B [out, r] and
// s = α / r; W and b are frozen. PEFT's defaults as LongLoRA sets them: dropout 0, no LoRA bias, A
// Kaiming-uniform with a = √5 (U(−1/√in, 1/√in)), B = 0. Everything else is frozen too, except the base
// parameters whose PEFT name contains one of `trainable_params` (LongLoRA's `--trainable_params embed,norm`:
// `[p.requires_grad_() for n, p in model.named_parameters() if any(k in n for k in trainable_params)]`),
// which are trained fully. Frozen parameters have no gradient buffer and no optimizer state.
//
// Names: LoRA tensors are named as PEFT writes them into adapter_model.safetensors
// (`base_model.model.model.layers.{l}.self_attn.q_proj.lora_A.weight`); base parameters keep their Hugging
// Face names. The substring rule is applied to the name PEFT's model gives a parameter (`base_model.model.` +
// the HF name, `.base_layer` before `.weight`/`.bias` of a targeted linear), as LongLoRA's loop sees it:
// "norm" matches input_layernorm, post_attention_layernorm, the final norm and Qwen3's q_norm / k_norm alike;
// with tied embeddings the one embedding matrix (also the LM head) is trained when "embed" is given.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "miniseq/io/model_config.h"
#include "miniseq/model/param_spec.h"

namespace miniseq {

struct LoraConfig {
  bool enabled = false;  // false: full fine-tuning (every parameter trained, no LoRA tensors)
  int64_t r = 8;
  double alpha = 16.0;
  // Linear modules adapted in every layer: any of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj,
  // down_proj.
  std::vector<std::string> target_modules = {"q_proj", "k_proj", "v_proj", "o_proj"};
  // Substrings of PEFT parameter names trained fully beside the LoRA tensors (LongLoRA's "embed,norm").
  std::vector<std::string> trainable_params;

  float scale() const { return static_cast<float>(alpha / static_cast<double>(r)); }  // PEFT: lora_alpha / r
  bool targets(ParamRole linear) const;  // whether the linear of this role (QProj, …, DownProj) is adapted
};

// "q_proj,k_proj" -> {"q_proj", "k_proj"} (commas, spaces ignored; empty entries dropped).
std::vector<std::string> split_list(const std::string& s);
// {"q_proj", "k_proj"} -> "q_proj,k_proj" (as the flags take it; "" for none).
std::string join_list(const std::vector<std::string>& v);
// Checks r > 0, α > 0, dropout 0 and the module names; `where` names the flag or file in the message.
void validate_lora(const LoraConfig& lora, double dropout, const std::string& where);

// The HF name of the linear module a role belongs to ("q_proj", …) and its path inside a layer
// ("self_attn.q_proj"); empty for roles that are not linear weights.
std::string_view linear_module_name(ParamRole r);

// The LoRA tensors of `config`: per layer, per targeted linear (in module order), lora_A [r, in] then lora_B
// [out, r], roles LoraA / LoraB, `target` = the adapted weight's role. Empty when LoRA is off.
std::vector<ParamSpec> lora_specs(const ModelConfig& config, const LoraConfig& lora);
// The whole parameter table of a run: the base model's (param_specs) followed by lora_specs.
std::vector<ParamSpec> model_param_specs(const ModelConfig& config, const LoraConfig& lora);
// The name PEFT's model gives a base parameter (what LongLoRA's substring rule is matched against).
std::string peft_param_name(const ParamSpec& base, const LoraConfig& lora);
// Whether a parameter of the table is trained: everything in full fine-tuning; with LoRA the LoRA tensors and
// the base parameters matched by trainable_params.
bool is_trainable(const ParamSpec& spec, const LoraConfig& lora);
// The trained subset of model_param_specs, in the same order.
std::vector<ParamSpec> trainable_specs(const ModelConfig& config, const LoraConfig& lora);

// PEFT's initialization from a seeded generator: A ~ U(−1/√in, 1/√in) (kaiming_uniform_ with a = √5), B = 0.
// `values` [numel] is filled for one LoRA spec; the stream depends on (seed, spec name) only.
void lora_init_values(const ParamSpec& spec, uint64_t seed, float* values);

}  // namespace miniseq
