// config.json of a Hugging Face Llama / Mistral / Qwen2 / Qwen3 model, parsed and validated. Reads both the classic
// keys of hub checkpoints (rope_theta, rope_scaling, torch_dtype) and the newer transformers layout
// (rope_parameters, dtype). Missing keys take the defaults of transformers' LlamaConfig / MistralConfig /
// Qwen2Config / Qwen3Config.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "miniseq/core/dtype.h"

namespace miniseq {

enum class Arch { Llama, Mistral, Qwen2, Qwen3 };
std::string_view arch_name(Arch a);  // the model_type: "llama", "mistral", "qwen2", "qwen3"

// RoPE scaling as transformers reads it (modeling_rope_utils.py): the rope_type and its parameters. The inverse
// frequencies these give are computed in model/rope_scaling.cpp.
enum class RopeType { Default, Linear, Dynamic, Yarn, Llama3 };
std::string_view rope_type_name(RopeType t);  // "default", "linear", "dynamic", "yarn", "llama3"

struct RopeScaling {
  RopeType type = RopeType::Default;
  double factor = 1.0;  // linear, dynamic, yarn, llama3
  // llama3 and yarn: the pre-training context (transformers: from the rope dict, else a top-level key of that name,
  // else max_position_embeddings).
  int64_t original_max_position_embeddings = 0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3
  // yarn: absent values take transformers' defaults (attention_factor from factor and mscale; beta_fast 32,
  // beta_slow 1; truncate true).
  std::optional<double> attention_factor, beta_fast, beta_slow, mscale, mscale_all_dim;
  bool truncate = true;
};

struct ModelConfig {
  Arch arch = Arch::Llama;
  int64_t hidden_size = 0;        // d
  int64_t intermediate_size = 0;  // I
  int64_t num_hidden_layers = 0;  // L
  int64_t num_attention_heads = 0;   // H
  int64_t num_key_value_heads = 0;   // Hkv
  int64_t head_dim = 0;              // D (hidden / heads unless given)
  int64_t vocab_size = 0;            // V
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope;                  // rope_scaling / rope_parameters (type default = none)
  // Sliding window per layer (0 = full causal attention). Mistral: every layer; Qwen2 with use_sliding_window: the
  // layers from max_window_layers on.
  std::vector<int64_t> sliding_window;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // bias on q, k, v projections (Qwen2 always; Llama with attention_bias)
  bool o_bias = false;    // bias on o_proj (Llama and Qwen3 with attention_bias)
  bool qk_norm = false;   // Qwen3: RMSNorm over each head of q and k (q_norm, k_norm [D]) before RoPE
  std::optional<int64_t> bos_token_id, eos_token_id, pad_token_id;
  // nn.Embedding's padding_idx: lookups of this id add nothing to the embedding gradient. Hugging Face
  // builds the embedding with config.json's pad_token_id and keeps it when the vocabulary grows
  // (resize_token_embeddings), even after the Trainer sets pad_token_id to a new [PAD] token. So it is set
  // once, when config.json is parsed (train/model_setup.h: grow_for_tokenizer), and never written back.
  std::optional<int64_t> embedding_padding_idx;
  DType torch_dtype = DType::F32;  // the dtype the checkpoint was saved in (informational)
  std::string hidden_act = "silu";

  int64_t q_dim() const { return num_attention_heads * head_dim; }    // H*D
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }   // Hkv*D
  int64_t max_sliding_window() const;
  // The context the model was trained for with its RoPE as configured: max_position_embeddings, times the factor
  // for linear scaling (LongLoRA's reading of Llama-2 configs) and for yarn (original × factor).
  int64_t native_context() const;

  // The JSON (the original with our changes applied, e.g. rope scaling or a grown vocabulary), classic layout.
  nlohmann::json to_json() const;
  nlohmann::json original;  // what was read, kept so that unknown keys survive a save
};

// Parses config.json text; `where` names the file in error messages.
ModelConfig parse_model_config(const std::string& json_text, const std::string& where);
// Reads DIR/config.json, or a .json file given directly.
ModelConfig load_model_config(const std::string& dir_or_file);

}  // namespace miniseq
