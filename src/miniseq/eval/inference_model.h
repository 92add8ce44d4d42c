// A Hugging Face model directory (a base model or a `miniseq train` checkpoint) loaded for inference: config with
// an optional RoPE scaling override, tokenizer when the directory has one, and the weights on a backend, in an arena
// of a size planned before anything is allocated.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "miniseq/core/memory_plan.h"
#include "miniseq/io/tokenizer/tokenizer.h"
#include "miniseq/model/decoder.h"

namespace miniseq {

// config.json of `dir`; rope_scaling_factor > 0 replaces the linear RoPE factor (as setting config.rope_scaling =
// {"type": "linear", "factor": F} does in LongLoRA's eval.py), 0 keeps what the config says.
ModelConfig load_inference_config(const std::string& dir, double rope_scaling_factor);

// The tokenizer of `dir`, or null when it has no tokenizer.json. A tokenizer with more ids than the model's
// vocabulary is an error (its ids would index past the embedding).
std::unique_ptr<tok::Tokenizer> load_tokenizer_if_present(const std::string& dir, const ModelConfig& config);

class InferenceModel {
 public:
  // Loads the weights of `dir` into an arena of `arena_bytes` (a dry run's arena_bytes) on `backend`.
  InferenceModel(const std::string& dir, const ModelConfig& config, Backend& backend, size_t arena_bytes);
  Decoder& decoder() { return *decoder_; }
  MemoryPlan& plan() { return *plan_; }

 private:
  std::unique_ptr<MemoryPlan> plan_;
  std::unique_ptr<Decoder> decoder_;
};

}  // namespace miniseq
