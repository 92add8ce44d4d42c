#include "miniseq/cli/lora_flags.h"

#include "miniseq/core/check.h"

namespace miniseq::cli {

std::vector<FlagSpec> lora_flag_specs(const std::string& low_rank_default) {
  return {
      {"low_rank_training", FlagKind::Bool, low_rank_default,
       "LoRA: train low-rank adapters of the target modules (and --trainable_params fully); the rest is "
       "frozen. "
       "False: full fine-tuning"},
      {"lora_r", FlagKind::Int, "8", "LoRA rank r"},
      {"lora_alpha", FlagKind::Float, "16", "LoRA alpha (the branch is scaled by alpha / r)"},
      {"lora_target_modules", FlagKind::String, "q_proj,k_proj,v_proj,o_proj",
       "linear modules given LoRA adapters: any of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"},
      {"trainable_params", FlagKind::String, "embed,norm",
       "with LoRA, parameters trained fully besides the adapters: comma-separated substrings of their PEFT "
       "names "
       "(LongLoRA's LoRA+ default embed,norm: the embedding and every RMSNorm; empty: LoRA alone)"},
  };
}

LoraConfig lora_config_from(const Flags& f) {
  LoraConfig lora;
  lora.enabled = f.boolean("low_rank_training");
  lora.r = f.i64("lora_r");
  lora.alpha = f.f64("lora_alpha");
  lora.target_modules = split_list(f.str("lora_target_modules"));
  lora.trainable_params = split_list(f.str("trainable_params"));
  if (!lora.enabled) {
    for (const char* flag : {"lora_r", "lora_alpha", "lora_target_modules"})
      MS_CHECK(!f.given(flag), "--", flag, " applies to LoRA only; add --low_rank_training True or drop it");
    return lora;
  }
  validate_lora(lora, /*dropout=*/0.0, "--lora_r / --lora_alpha / --lora_target_modules");
  return lora;
}

std::vector<FlagSpec> with_flags(std::vector<FlagSpec> specs, const std::vector<FlagSpec>& extra) {
  specs.insert(specs.end(), extra.begin(), extra.end());
  return specs;
}

}  // namespace miniseq::cli
