#include "miniseq/cli/inference_flags.h"

#include "miniseq/core/check.h"

namespace miniseq::cli {

std::vector<FlagSpec> inference_flags(std::vector<FlagSpec> own) {
  std::vector<FlagSpec> f = {
      {"model", FlagKind::String, "", "Hugging Face model directory (a base model or a miniseq checkpoint)"},
      {"device", FlagKind::String, "cpu", "cpu (fp32) or cuda (bf16 storage, fp32 accumulation)"},
      {"rope_scaling_factor", FlagKind::Float, "0",
       "linear RoPE scaling factor replacing config.json's (0 = as saved; LongLoRA: ceil(context / original))"},
      {"peft_model", FlagKind::String, "",
       "PEFT adapter directory (adapter_config.json, adapter_model.safetensors, optional "
       "trainable_params.safetensors) run over --model without merging"},
      {"mini_sequence", FlagKind::Bool, "True", "chunk the MLP and the LM head (MsT) in the forward pass"},
      {"mlp_chunk_tokens", FlagKind::Int, "0", "rows per MLP chunk (0 = hidden_size)"},
      {"lm_head_chunks", FlagKind::Int, "0", "LM-head chunks (0 = ceil(vocab / hidden))"},
  };
  f.insert(f.end(), own.begin(), own.end());
  return f;
}

StepPolicy inference_policy(const Flags& f) {
  MS_CHECK(f.i64("mlp_chunk_tokens") >= 0 && f.i64("lm_head_chunks") >= 0,
           "--mlp_chunk_tokens and --lm_head_chunks must be >= 0");
  StepPolicy p;
  p.mini_sequence = f.boolean("mini_sequence");
  p.checkpointing = true;  // forward only: nothing is kept past its layer either way
  p.mlp_chunk_tokens = f.i64("mlp_chunk_tokens");
  p.lm_head_chunks = f.i64("lm_head_chunks");
  return p;
}

std::unique_ptr<Backend> inference_backend(const Flags& f) {
  const std::string d = f.str("device");
  MS_CHECK(d == "cpu" || d == "cuda", "--device must be cpu or cuda, got '", d, "'");
  return make_backend(d == "cuda" ? Device::CUDA : Device::CPU);
}

}  // namespace miniseq::cli
