#include "miniseq/io/model_config.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "miniseq/core/check.h"

namespace miniseq {

namespace fs = std::filesystem;
using nlohmann::json;

std::string_view arch_name(Arch a) {
  switch (a) {
    case Arch::Llama: return "llama";
    case Arch::Mistral: return "mistral";
    case Arch::Qwen2: return "qwen2";
  }
  return "?";
}

int64_t ModelConfig::max_sliding_window() const {
  int64_t m = 0;
  for (int64_t w : sliding_window) m = std::max(m, w);
  return m;
}

namespace {

struct Reader {
  const json& j;
  const std::string& where;

  bool present(const char* key) const { return j.contains(key) && !j[key].is_null(); }

  int64_t integer(const char* key, int64_t def) const {
    if (!present(key)) return def;
    MS_CHECK(j[key].is_number_integer(), where, ": \"", key, "\" must be an integer, found ", j[key].dump());
    return j[key].get<int64_t>();
  }
  double number(const char* key, double def) const {
    if (!present(key)) return def;
    MS_CHECK(j[key].is_number(), where, ": \"", key, "\" must be a number, found ", j[key].dump());
    return j[key].get<double>();
  }
  bool boolean(const char* key, bool def) const {
    if (!present(key)) return def;
    MS_CHECK(j[key].is_boolean(), where, ": \"", key, "\" must be true or false, found ", j[key].dump());
    return j[key].get<bool>();
  }
  std::optional<int64_t> token_id(const char* key) const {
    if (!present(key)) return std::nullopt;
    // Some configs list several eos ids (Llama-3-Instruct); the first is the one used to join documents.
    if (j[key].is_array()) {
      MS_CHECK(!j[key].empty() && j[key][0].is_number_integer(), where, ": \"", key, "\" must be a token id");
      return j[key][0].get<int64_t>();
    }
    MS_CHECK(j[key].is_number_integer(), where, ": \"", key, "\" must be a token id, found ", j[key].dump());
    return j[key].get<int64_t>();
  }
};

void parse_rope(const json& j, const std::string& where, ModelConfig& c) {
  // Classic: rope_theta + rope_scaling {"type"|"rope_type": ..., "factor": ...}. Newer transformers: rope_parameters
  // {"rope_type": ..., "rope_theta": ..., "factor": ...}.
  const json* scaling = nullptr;
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    scaling = &j["rope_parameters"];
    if (scaling->contains("rope_theta")) {
      MS_CHECK((*scaling)["rope_theta"].is_number(), where, ": rope_parameters.rope_theta must be a number");
      c.rope_theta = (*scaling)["rope_theta"].get<double>();
    }
  }
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    MS_CHECK(j["rope_scaling"].is_object(), where, ": \"rope_scaling\" must be an object or null");
    scaling = &j["rope_scaling"];
  }
  if (!scaling) return;
  std::string type = "default";
  if (scaling->contains("rope_type")) type = (*scaling)["rope_type"].get<std::string>();
  else if (scaling->contains("type")) type = (*scaling)["type"].get<std::string>();
  if (type == "default") return;
  MS_CHECK(type == "linear", where, ": rope scaling type \"", type,
           "\" is not supported; miniseq implements linear scaling (position interpolation) only");
  MS_CHECK(scaling->contains("factor") && (*scaling)["factor"].is_number(), where,
           ": linear rope scaling needs a numeric \"factor\"");
  c.rope_linear_factor = (*scaling)["factor"].get<double>();
  MS_CHECK(c.rope_linear_factor >= 1.0, where, ": rope scaling factor ", c.rope_linear_factor, " must be >= 1");
}

}  // namespace

ModelConfig parse_model_config(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    fail(where, ": malformed JSON: ", e.what());
  }
  MS_CHECK(j.is_object(), where, ": config must be a JSON object");
  Reader r{j, where};
  ModelConfig c;
  c.original = j;

  MS_CHECK(r.present("model_type") && j["model_type"].is_string(), where,
           ": no \"model_type\"; miniseq needs a llama, mistral or qwen2 config.json");
  const std::string type = j["model_type"].get<std::string>();
  if (type == "llama") c.arch = Arch::Llama;
  else if (type == "mistral") c.arch = Arch::Mistral;
  else if (type == "qwen2") c.arch = Arch::Qwen2;
  else fail(where, ": model_type \"", type, "\" is not supported (supported: llama, mistral, qwen2)");

  // transformers' per-architecture defaults for absent keys.
  const bool llama = c.arch == Arch::Llama, mistral = c.arch == Arch::Mistral;
  c.vocab_size = r.integer("vocab_size", llama || mistral ? 32000 : 151936);
  c.hidden_size = r.integer("hidden_size", 4096);
  c.intermediate_size = r.integer("intermediate_size", llama ? 11008 : mistral ? 14336 : 22016);
  c.num_hidden_layers = r.integer("num_hidden_layers", 32);
  c.num_attention_heads = r.integer("num_attention_heads", 32);
  c.num_key_value_heads = r.integer("num_key_value_heads", mistral ? 8 : c.num_attention_heads);
  c.max_position_embeddings = r.integer("max_position_embeddings", llama ? 2048 : mistral ? 4096 * 32 : 32768);
  c.rms_norm_eps = r.number("rms_norm_eps", 1e-6);
  c.rope_theta = r.number("rope_theta", 10000.0);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  c.bos_token_id = r.token_id("bos_token_id");
  c.eos_token_id = r.token_id("eos_token_id");
  c.pad_token_id = r.token_id("pad_token_id");
  if (r.present("hidden_act")) c.hidden_act = j["hidden_act"].get<std::string>();
  MS_CHECK(c.hidden_act == "silu" || c.hidden_act == "swish", where, ": hidden_act \"", c.hidden_act,
           "\" is not supported (Llama/Mistral/Qwen2 use silu)");
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (r.present(key) && j[key].is_string()) {
      DType t;
      MS_CHECK(dtype_from_torch_name(j[key].get<std::string>(), &t), where, ": \"", key, "\" ",
               j[key].dump(), " is not one of float32, bfloat16, float16");
      c.torch_dtype = t;
    }
  }
  parse_rope(j, where, c);

  // Biases: Qwen2 always has q/k/v biases and no o bias; Llama's attention_bias puts a bias on all four.
  if (c.arch == Arch::Qwen2) {
    c.qkv_bias = true;
  } else {
    c.qkv_bias = c.o_bias = r.boolean("attention_bias", false);
  }
  MS_CHECK(!r.boolean("mlp_bias", false), where, ": \"mlp_bias\": true is not supported");

  // Validation of the shapes before anything is derived from them.
  for (auto [key, v] : {std::pair{"hidden_size", c.hidden_size}, {"intermediate_size", c.intermediate_size},
                        {"num_hidden_layers", c.num_hidden_layers}, {"num_attention_heads", c.num_attention_heads},
                        {"num_key_value_heads", c.num_key_value_heads}, {"vocab_size", c.vocab_size},
                        {"max_position_embeddings", c.max_position_embeddings}})
    MS_CHECK(v > 0, where, ": \"", key, "\" must be positive, found ", v);
  if (r.present("head_dim")) {
    c.head_dim = r.integer("head_dim", 0);
    MS_CHECK(c.head_dim > 0, where, ": \"head_dim\" must be positive");
  } else {
    MS_CHECK(c.hidden_size % c.num_attention_heads == 0, where, ": num_attention_heads ", c.num_attention_heads,
             " does not divide hidden_size ", c.hidden_size, " (and no head_dim is given)");
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  MS_CHECK(c.head_dim % 2 == 0, where, ": head_dim ", c.head_dim, " must be even for rotary embeddings");
  MS_CHECK(c.num_attention_heads % c.num_key_value_heads == 0, where, ": num_key_value_heads ",
           c.num_key_value_heads, " does not divide num_attention_heads ", c.num_attention_heads);
  MS_CHECK(c.rms_norm_eps > 0, where, ": rms_norm_eps must be positive");
  MS_CHECK(c.rope_theta > 0, where, ": rope_theta must be positive");
  for (auto [key, id] : {std::pair{"bos_token_id", c.bos_token_id}, {"eos_token_id", c.eos_token_id},
                         {"pad_token_id", c.pad_token_id}})
    MS_CHECK(!id || (*id >= 0 && *id < c.vocab_size), where, ": \"", key, "\" ", *id, " is outside the vocabulary [0, ",
             c.vocab_size, ")");
  c.embedding_padding_idx = c.pad_token_id;

  // Sliding window per layer.
  c.sliding_window.assign(static_cast<size_t>(c.num_hidden_layers), 0);
  // MistralConfig defaults to a 4096 window when the key is absent; null means full attention.
  int64_t window = j.contains("sliding_window") ? r.integer("sliding_window", 0) : (mistral ? 4096 : 0);
  MS_CHECK(window >= 0, where, ": \"sliding_window\" must be positive or null");
  if (c.arch == Arch::Mistral) {
    for (auto& w : c.sliding_window) w = window;
  } else if (c.arch == Arch::Qwen2 && r.boolean("use_sliding_window", false) && window > 0) {
    int64_t first = r.integer("max_window_layers", 28);
    for (int64_t l = std::max<int64_t>(first, 0); l < c.num_hidden_layers; ++l)
      c.sliding_window[static_cast<size_t>(l)] = window;
  }
  return c;
}

ModelConfig load_model_config(const std::string& dir_or_file) {
  fs::path p(dir_or_file);
  if (fs::is_directory(p)) p /= "config.json";
  std::ifstream in(p);
  MS_CHECK(in.good(), p.string(), ": cannot read (expected a Hugging Face config.json)");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_model_config(ss.str(), p.string());
}

json ModelConfig::to_json() const {
  json j = original.is_object() ? original : json::object();
  j["model_type"] = std::string(arch_name(arch));
  j["architectures"] = {arch == Arch::Llama     ? "LlamaForCausalLM"
                        : arch == Arch::Mistral ? "MistralForCausalLM"
                                                : "Qwen2ForCausalLM"};
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  if (j.contains("head_dim") || head_dim * num_attention_heads != hidden_size) j["head_dim"] = head_dim;
  j["vocab_size"] = vocab_size;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["hidden_act"] = hidden_act;
  if (arch == Arch::Llama) j["attention_bias"] = qkv_bias;
  if (bos_token_id) j["bos_token_id"] = *bos_token_id;
  if (eos_token_id) j["eos_token_id"] = *eos_token_id;
  if (pad_token_id) j["pad_token_id"] = *pad_token_id;
  j["torch_dtype"] = torch_dtype == DType::F32 ? "float32" : torch_dtype == DType::BF16 ? "bfloat16" : "float16";
  // Rope: write the classic keys (which every transformers version reads), and keep rope_parameters in step.
  j["rope_theta"] = rope_theta;
  if (rope_linear_factor != 1.0) j["rope_scaling"] = {{"type", "linear"}, {"rope_type", "linear"}, {"factor", rope_linear_factor}};
  else j["rope_scaling"] = nullptr;
  if (j.contains("rope_parameters")) {
    j["rope_parameters"] = {{"rope_type", rope_linear_factor != 1.0 ? "linear" : "default"}, {"rope_theta", rope_theta}};
    if (rope_linear_factor != 1.0) j["rope_parameters"]["factor"] = rope_linear_factor;
  }
  return j;
}

}  // namespace miniseq
