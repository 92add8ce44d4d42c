// `miniseq tiny-model --out DIR`: writes a small random Llama/Mistral/Qwen2 model directory (config.json and
// safetensors, sharded on request) with transformers' initialization (normal, std 0.02; norms 1). Used by
// `make demo` and by tests that need a model without Python.
#include <cstdio>
#include <filesystem>

#include "miniseq/cli/commands.h"
#include "miniseq/cli/flags.h"
#include "miniseq/core/random.h"
#include "miniseq/io/safetensors.h"
#include "miniseq/model/param_spec.h"

namespace miniseq::cli {

int cmd_tiny_model(const Args& args) {
  Flags f("tiny-model", "miniseq tiny-model --out DIR [--arch llama|mistral|qwen2|qwen3] [sizes]",
          {
              {"out", FlagKind::String, "", "directory to write (created)"},
              {"arch", FlagKind::String, "llama", "llama, mistral, qwen2 or qwen3"},
              {"hidden_size", FlagKind::Int, "64", "d"},
              {"intermediate_size", FlagKind::Int, "176", "I"},
              {"num_hidden_layers", FlagKind::Int, "2", "L"},
              {"num_attention_heads", FlagKind::Int, "4", "H"},
              {"num_key_value_heads", FlagKind::Int, "2", "Hkv"},
              {"vocab_size", FlagKind::Int, "256", "V"},
              {"max_position_embeddings", FlagKind::Int, "2048", "context length of the config"},
              {"sliding_window", FlagKind::Int, "0", "Mistral sliding window (0 = null)"},
              {"tie_word_embeddings", FlagKind::Bool, "False", "share embedding and LM head"},
              {"dtype", FlagKind::String, "bfloat16", "float32 or bfloat16 weights"},
              {"max_shard_bytes", FlagKind::Int, "0", "shard the weights when larger (0 = one file)"},
              {"seed", FlagKind::Int, "0", "random seed"},
          });
  if (!f.parse(args)) return 0;
  MS_CHECK(f.has("out"), "tiny-model: --out DIR is required");
  const std::string out = f.str("out"), arch = f.str("arch");
  MS_CHECK(arch == "llama" || arch == "mistral" || arch == "qwen2" || arch == "qwen3",
           "tiny-model: --arch must be llama, mistral, qwen2 or qwen3, got '", arch, "'");
  DType dtype;
  MS_CHECK(dtype_from_torch_name(f.str("dtype"), &dtype), "tiny-model: --dtype must be float32 or bfloat16");

  nlohmann::json j = {
      {"model_type", arch},
      {"architectures", {arch == "llama"     ? "LlamaForCausalLM"
                         : arch == "mistral" ? "MistralForCausalLM"
                         : arch == "qwen2"   ? "Qwen2ForCausalLM"
                                             : "Qwen3ForCausalLM"}},
      {"hidden_size", f.i64("hidden_size")},
      {"intermediate_size", f.i64("intermediate_size")},
      {"num_hidden_layers", f.i64("num_hidden_layers")},
      {"num_attention_heads", f.i64("num_attention_heads")},
      {"num_key_value_heads", f.i64("num_key_value_heads")},
      {"vocab_size", f.i64("vocab_size")},
      {"max_position_embeddings", f.i64("max_position_embeddings")},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 10000.0},
      {"rope_scaling", nullptr},
      {"hidden_act", "silu"},
      {"tie_word_embeddings", f.boolean("tie_word_embeddings")},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
      {"torch_dtype", f.str("dtype")},
  };
  if (arch == "qwen3")  // Qwen3Config's head_dim defaults to 128: write the tiny model's out
    j["head_dim"] = f.i64("hidden_size") / f.i64("num_attention_heads");
  if (arch == "mistral")
    j["sliding_window"] = f.i64("sliding_window") > 0 ? nlohmann::json(f.i64("sliding_window")) : nlohmann::json();
  // Validate through the same parser every model goes through.
  ModelConfig config = parse_model_config(j.dump(), "tiny-model config");

  std::filesystem::create_directories(out);
  Rng rng(static_cast<uint64_t>(f.i64("seed")));
  std::vector<std::vector<float>> storage;
  std::vector<TensorToWrite> tensors;
  for (const auto& s : param_specs(config)) {
    storage.emplace_back(static_cast<size_t>(s.shape.numel()));
    auto& v = storage.back();
    const bool norm = param_kind(s.role) == "norm";
    const bool bias = s.role == ParamRole::QBias || s.role == ParamRole::KBias || s.role == ParamRole::VBias ||
                      s.role == ParamRole::OBias;
    for (auto& x : v) x = norm ? 1.0f : bias ? 0.0f : static_cast<float>(0.02 * rng.normal());
    tensors.push_back({s.name, Tensor(v.data(), s.shape), dtype});
  }
  write_file_atomic((std::filesystem::path(out) / "config.json").string(), config.to_json().dump(2) + "\n");
  write_safetensors_model(out, tensors, {{"format", "pt"}}, static_cast<size_t>(f.i64("max_shard_bytes")));
  std::printf("wrote %s model with %zu tensors to %s\n", arch.c_str(), tensors.size(), out.c_str());
  return 0;
}

}  // namespace miniseq::cli
