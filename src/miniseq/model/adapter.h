// PEFT adapter directories (what `peft.PeftModel.save_pretrained` writes and `PeftModel.from_pretrained`
// reads) and LongLoRA's trainable parameters:
//   adapter_config.json            r, lora_alpha, target_modules, lora_dropout, … (PEFT's LoraConfig)
//   adapter_model.safetensors      the LoRA tensors,
//   `base_model.model.model.layers.{l}.<module>.lora_A.weight` trainable_params.safetensors   the fully
//   trained base tensors (LoRA+: embed/norm) under their Hugging Face
//                                  names; LongLoRA writes the same dict as trainable_params.bin (torch.save)
#pragma once

#include <cstdint>
#include <string>

#include "miniseq/model/lora.h"
#include "miniseq/model/params.h"
#include "miniseq/ops/backend.h"

namespace miniseq {

constexpr const char* kAdapterConfigFile = "adapter_config.json";
constexpr const char* kAdapterWeightsFile = "adapter_model.safetensors";
constexpr const char* kTrainableParamsFile = "trainable_params.safetensors";

// The LoRA settings of dir/adapter_config.json (enabled, r, alpha, target_modules; trainable_params empty).
// Fails, naming the file and the key, on anything miniseq does not run the way PEFT would: another peft_type,
// lora_dropout != 0, bias != "none", DoRA, rsLoRA, per-module rank/alpha patterns, layers_to_transform, a
// regex target_modules string, modules_to_save.
LoraConfig read_adapter_config(const std::string& dir);

// Reads dir/adapter_model.safetensors into the LoRA tensors of `params` (converting dtypes). Fails naming the
// file on a missing tensor, a shape that differs from the config's, or a LoRA tensor the config does not
// imply.
void load_adapter_weights(const std::string& dir, const ParamSet& params, Backend* backend = nullptr);

// Reads dir/trainable_params.safetensors, when present, over the base tensors of `params` it names (Hugging
// Face names); returns whether the file was there. Fails on a tensor that is not a parameter or has another
// shape.
bool load_trainable_params(const std::string& dir, const ParamSet& params, Backend* backend = nullptr);

// Fills the LoRA tensors of `params` as PEFT initializes them (lora_init_values: A Kaiming-uniform, B = 0).
void init_lora_weights(const ParamSet& params, uint64_t seed, Backend* backend = nullptr);

// Writes dir/adapter_model.safetensors (the LoRA tensors of `params`, stored as `dtype`) and
// dir/adapter_config.json (PEFT 0.21's keys, base_model_name_or_path = base_model), each atomically.
void save_adapter(const std::string& dir, const ParamSet& params, const LoraConfig& lora,
                  const std::string& base_model, DType dtype, Backend* backend = nullptr);
// Writes dir/trainable_params.safetensors: the base tensors of `params` that `lora` trains (HF names).
// Nothing is written (and false returned) when there are none.
bool save_trainable_params(const std::string& dir, const ParamSet& params, const LoraConfig& lora,
                           DType dtype, Backend* backend = nullptr);

}  // namespace miniseq
