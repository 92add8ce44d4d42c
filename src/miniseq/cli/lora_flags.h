// The LoRA flags, declared once for every command that takes them (train, grad, memplan): LongLoRA's
// --low_rank_training and --trainable_params, and miniseq's --lora_r, --lora_alpha, --lora_target_modules
// (LongLoRA hard-codes r 8, alpha 16, q/k/v/o; these are its values).
#pragma once

#include <string>
#include <vector>

#include "miniseq/cli/flags.h"
#include "miniseq/model/lora.h"

namespace miniseq::cli {

// The flag specs; `low_rank_default` is "True" for train (LongLoRA's default) and "False" elsewhere.
std::vector<FlagSpec> lora_flag_specs(const std::string& low_rank_default);
// The LoRA configuration the parsed flags give (disabled with --low_rank_training False), validated: errors
// name the flag. --trainable_params applies only with LoRA.
LoraConfig lora_config_from(const Flags& f);
// Appends `extra` to `specs` (a command's own table plus the shared ones).
std::vector<FlagSpec> with_flags(std::vector<FlagSpec> specs, const std::vector<FlagSpec>& extra);

}  // namespace miniseq::cli
