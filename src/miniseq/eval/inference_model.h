// A Hugging Face model directory (a base model or a `miniseq train` checkpoint) loaded for inference: config
// with an optional RoPE scaling override, tokenizer when the directory has one, and the weights on a backend,
// in an arena of a size planned before anything is allocated.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "miniseq/core/memory_plan.h"
#include "miniseq/io/tokenizer/tokenizer.h"
#include "miniseq/model/decoder.h"

namespace miniseq {

// config.json of `dir`; rope_scaling_factor > 0 replaces the linear RoPE factor (as setting
// config.rope_scaling =
// {"type": "linear", "factor": F} does in LongLoRA's eval.py), 0 keeps what the config says.
ModelConfig load_inference_config(const std::string& dir, double rope_scaling_factor);

// The tokenizer of `dir`, or null when it has no tokenizer.json. A tokenizer with more ids than the model's
// vocabulary is an error (its ids would index past the embedding).
std::unique_ptr<tok::Tokenizer> load_tokenizer_if_present(const std::string& dir, const ModelConfig& config);

// --peft_model DIR: a PEFT adapter run without merging it (LongLoRA's eval.py / passkey_retrivial.py with
// --peft_model). Returns the adapter's LoRA settings (model/adapter.h) and prepares `config` as training
// prepared the base model: the tokenizer's missing special tokens added ([PAD] first) and the vocabulary
// grown (train/special_tokens.h), so that a trained embedding in trainable_params.safetensors fits. "" = no
// adapter (LoRA disabled, config unchanged).
LoraConfig prepare_peft_config(const std::string& model_dir, const std::string& peft_dir,
                               ModelConfig& config);

class InferenceModel {
 public:
  // Loads the weights of `dir` into an arena of `arena_bytes` (a dry run's arena_bytes) on `backend`. With
  // `peft_dir` (and `lora` from prepare_peft_config) the LoRA tensors of the adapter and its
  // trainable_params.safetensors are loaded too, and the targeted linears run the LoRA branch (vocabulary
  // rows the base files lack are the mean of theirs, as in training).
  InferenceModel(const std::string& dir, const ModelConfig& config, Backend& backend, size_t arena_bytes,
                 const std::string& peft_dir = "", const LoraConfig& lora = {});
  Decoder& decoder() { return *decoder_; }
  MemoryPlan& plan() { return *plan_; }

 private:
  std::unique_ptr<MemoryPlan> plan_;
  std::unique_ptr<Decoder> decoder_;
};

}  // namespace miniseq
