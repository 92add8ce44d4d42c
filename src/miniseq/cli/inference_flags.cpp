#include "miniseq/cli/inference_flags.h"

#include <filesystem>
#include <iostream>

#include "miniseq/core/check.h"
#include "miniseq/io/json_read.h"
#include "miniseq/model/adapter.h"

namespace miniseq::cli {

std::vector<FlagSpec> inference_flags(std::vector<FlagSpec> own) {
  std::vector<FlagSpec> f = {
      {"model", FlagKind::String, "",
       "Hugging Face model directory (a base model or a miniseq checkpoint), or a PEFT adapter directory "
       "(run over its base model)"},
      {"device", FlagKind::String, "cpu", "cpu (fp32) or cuda (bf16 storage, fp32 accumulation)"},
      {"rope_scaling_factor", FlagKind::Float, "0",
       "linear RoPE scaling factor replacing config.json's (0 = as saved; LongLoRA: ceil(context / "
       "original))"},
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

ModelSource inference_model_source(const Flags& f, const char* command) {
  namespace fs = std::filesystem;
  ModelSource s{f.str("model"), f.str("peft_model")};
  const fs::path dir(s.model);
  if (!fs::exists(dir / kAdapterConfigFile) || fs::exists(dir / "config.json")) return s;
  MS_CHECK(s.peft.empty(), command, ": --model ", s.model, " is a PEFT adapter (", kAdapterConfigFile,
           ", no config.json); give its base model as --model and the adapter as --peft_model");
  const std::string cfg_path = (dir / kAdapterConfigFile).string();
  const jsonio::json cfg = jsonio::parse_file(cfg_path);
  const jsonio::Obj obj(cfg, cfg_path, /*file_level=*/true);
  const std::string base = obj.str("base_model_name_or_path", "");
  MS_CHECK(!base.empty() && fs::is_directory(base), command, ": --model ", s.model, " is a PEFT adapter (",
           kAdapterConfigFile, ") whose base model ",
           base.empty() ? std::string("is not named") : "'" + base + "' is not a local directory",
           ": pass --model BASE_MODEL_DIR --peft_model ", s.model,
           ", or make one model of them with `miniseq merge "
           "--base_model BASE_MODEL_DIR --peft_model ",
           s.model, " --save_path DIR`");
  std::cerr << command << ": " << s.model << " is a PEFT adapter; running it over its base model " << base
            << " (" << kAdapterConfigFile << ": base_model_name_or_path)\n";
  s.peft = s.model;
  s.model = base;
  return s;
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
