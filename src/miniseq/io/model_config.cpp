#include "miniseq/io/model_config.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <tuple>

#include "miniseq/core/check.h"
#include "miniseq/io/json_read.h"

namespace miniseq {

namespace fs = std::filesystem;
using nlohmann::json;

std::string_view arch_name(Arch a) {
  switch (a) {
    case Arch::Llama: return "llama";
    case Arch::Mistral: return "mistral";
    case Arch::Qwen2: return "qwen2";
    case Arch::Qwen3: return "qwen3";
  }
  return "?";
}

std::string_view rope_type_name(RopeType t) {
  switch (t) {
    case RopeType::Default: return "default";
    case RopeType::Linear: return "linear";
    case RopeType::Dynamic: return "dynamic";
    case RopeType::Yarn: return "yarn";
    case RopeType::Llama3: return "llama3";
  }
  return "?";
}

namespace {
// The value of `all` whose name is `s` (the inverse of arch_name / rope_type_name).
template <typename E>
bool named(std::string_view s, std::initializer_list<E> all, std::string_view (*name)(E), E* out) {
  for (E e : all)
    if (name(e) == s) return *out = e, true;
  return false;
}
}  // namespace

int64_t ModelConfig::native_context() const {
  const auto mp = static_cast<double>(max_position_embeddings);
  switch (rope.type) {
    case RopeType::Linear: return static_cast<int64_t>(mp * rope.factor);
    case RopeType::Yarn:
      return std::max(max_position_embeddings,
                      static_cast<int64_t>(static_cast<double>(rope.original_max_position_embeddings) * rope.factor));
    default: return max_position_embeddings;
  }
}

int64_t ModelConfig::max_sliding_window() const {
  int64_t m = 0;
  for (int64_t w : sliding_window) m = std::max(m, w);
  return m;
}

namespace {

// Plausibility bounds of config.json sizes (see parse_model_config).
constexpr int64_t kMaxWidth = int64_t{1} << 22, kMaxLayers = int64_t{1} << 14, kMaxHeads = int64_t{1} << 14,
                  kMaxHeadDim = int64_t{1} << 14, kMaxVocab = int64_t{1} << 30,
                  kMaxPositions = int64_t{1} << 40;
constexpr double kMaxRopeFactor = 1e6;

struct Reader {
  const json& j;
  const std::string& where;

  bool present(const char* key) const { return j.contains(key) && !j[key].is_null(); }
  std::string at(const char* key) const { return where + ": \"" + key + "\""; }

  int64_t integer(const char* key, int64_t def) const {
    if (!present(key)) return def;
    MS_CHECK(j[key].is_number_integer(), at(key), " must be an integer, found ", jsonio::describe(j[key]));
    return jsonio::as_int(j[key], at(key));
  }
  double number(const char* key, double def) const {
    if (!present(key)) return def;
    MS_CHECK(j[key].is_number(), at(key), " must be a number, found ", jsonio::describe(j[key]));
    return j[key].get<double>();
  }
  bool boolean(const char* key, bool def) const {
    if (!present(key)) return def;
    MS_CHECK(j[key].is_boolean(), at(key), " must be true or false, found ", jsonio::describe(j[key]));
    return j[key].get<bool>();
  }
  std::string string(const char* key, const std::string& def) const {
    if (!present(key)) return def;
    MS_CHECK(j[key].is_string(), at(key), " must be a string, found ", jsonio::describe(j[key]));
    return j[key].get<std::string>();
  }
  std::optional<int64_t> token_id(const char* key) const {
    if (!present(key)) return std::nullopt;
    // Some configs list several eos ids (Llama-3-Instruct); the first is the one used to join documents.
    if (j[key].is_array()) {
      MS_CHECK(!j[key].empty() && j[key][0].is_number_integer(), at(key), " must be a token id, found ",
               jsonio::describe(j[key]));
      return jsonio::as_int(j[key][0], at(key));
    }
    MS_CHECK(j[key].is_number_integer(), at(key), " must be a token id, found ", jsonio::describe(j[key]));
    return jsonio::as_int(j[key], at(key));
  }
};

// A number in the rope dict (absent or null: nullopt).
std::optional<double> rope_number(const json& d, const char* key, const std::string& where, const char* dict) {
  if (!d.contains(key) || d[key].is_null()) return std::nullopt;
  MS_CHECK(d[key].is_number(), where, ": ", dict, ".", key, " must be a number");
  return d[key].get<double>();
}

void parse_rope(const json& j, const std::string& where, ModelConfig& c) {
  // Classic: rope_theta + rope_scaling {"type"|"rope_type": ..., "factor": ...}. Newer transformers: rope_parameters
  // {"rope_type": ..., "rope_theta": ..., "factor": ...}. transformers takes rope_scaling when both are there.
  const json* scaling = nullptr;
  const char* dict = "rope_parameters";
  if (j.contains("rope_parameters") && !j["rope_parameters"].is_null()) {
    MS_CHECK(j["rope_parameters"].is_object(), where, ": \"rope_parameters\" must be an object or null");
    scaling = &j["rope_parameters"];
  }
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    MS_CHECK(j["rope_scaling"].is_object(), where, ": \"rope_scaling\" must be an object or null");
    if (!j["rope_scaling"].empty()) scaling = &j["rope_scaling"], dict = "rope_scaling";
  }
  if (!scaling) return;
  const json& d = *scaling;
  if (auto theta = rope_number(d, "rope_theta", where, dict)) c.rope_theta = *theta;
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    if (d.contains(key) && !d[key].is_null()) {
      MS_CHECK(d[key].is_string(), where, ": ", dict, ".", key, " must be a string");
      type = d[key].get<std::string>();
      break;
    }
  }
  if (auto prf = rope_number(d, "partial_rotary_factor", where, dict))
    MS_CHECK(*prf == 1.0, where, ": partial_rotary_factor ", *prf, " is not supported (RoPE on the whole head only)");
  RopeScaling& r = c.rope;
  if (!named(type, {RopeType::Default, RopeType::Linear, RopeType::Dynamic, RopeType::Yarn, RopeType::Llama3},
             rope_type_name, &r.type))
    fail(where, ": rope scaling type \"", jsonio::excerpt(type),
         "\" is not supported; miniseq implements default, linear, dynamic, yarn and llama3");
  if (r.type == RopeType::Default) return;

  auto require = [&](const char* key) {
    auto v = rope_number(d, key, where, dict);
    MS_CHECK(v, where, ": ", type, " rope scaling needs a numeric ", dict, ".", key);
    return *v;
  };
  r.factor = require("factor");
  MS_CHECK(r.factor >= 1.0, where, ": ", dict, ".factor ", r.factor, " must be >= 1");
  MS_CHECK(r.factor <= kMaxRopeFactor, where, ": ", dict, ".factor ", r.factor, " is beyond the ",
           kMaxRopeFactor, " that miniseq accepts");
  if (r.type == RopeType::Yarn || r.type == RopeType::Llama3) {
    // transformers: a top-level original_max_position_embeddings wins, then the dict's, then max_position_embeddings.
    const json* src = j.contains("original_max_position_embeddings") ? &j : d.contains("original_max_position_embeddings") ? &d : nullptr;
    if (src) {
      MS_CHECK((*src)["original_max_position_embeddings"].is_number_integer(), where,
               ": original_max_position_embeddings must be an integer");
      r.original_max_position_embeddings = jsonio::as_int((*src)["original_max_position_embeddings"],
                                                          where + ": original_max_position_embeddings");
      MS_CHECK(r.original_max_position_embeddings > 0 && r.original_max_position_embeddings <= kMaxPositions,
               where, ": original_max_position_embeddings must be in [1, ", kMaxPositions, "]");
    } else {
      MS_CHECK(r.type == RopeType::Yarn, where, ": llama3 rope scaling needs ", dict,
               ".original_max_position_embeddings");
    }
  }
  if (r.type == RopeType::Llama3) {
    r.low_freq_factor = require("low_freq_factor");
    r.high_freq_factor = require("high_freq_factor");
    MS_CHECK(r.low_freq_factor > 0 && r.high_freq_factor > r.low_freq_factor, where,
             ": llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor, found ", r.low_freq_factor, " and ",
             r.high_freq_factor);
  }
  if (r.type == RopeType::Yarn) {
    r.attention_factor = rope_number(d, "attention_factor", where, dict);
    r.beta_fast = rope_number(d, "beta_fast", where, dict);
    r.beta_slow = rope_number(d, "beta_slow", where, dict);
    r.mscale = rope_number(d, "mscale", where, dict);
    r.mscale_all_dim = rope_number(d, "mscale_all_dim", where, dict);
    if (d.contains("truncate") && !d["truncate"].is_null()) {
      MS_CHECK(d["truncate"].is_boolean(), where, ": ", dict, ".truncate must be true or false");
      r.truncate = d["truncate"].get<bool>();
    }
    MS_CHECK(!r.attention_factor || *r.attention_factor > 0, where, ": ", dict, ".attention_factor must be positive");
  }
}

}  // namespace

ModelConfig parse_model_config(const std::string& text, const std::string& where) {
  const json j = jsonio::parse(text, where);
  MS_CHECK(j.is_object(), where, ": config must be a JSON object");
  Reader r{j, where};
  ModelConfig c;
  c.original = j;

  MS_CHECK(r.present("model_type") && j["model_type"].is_string(), where,
           ": no \"model_type\"; miniseq needs a llama, mistral, qwen2 or qwen3 config.json");
  const std::string type = j["model_type"].get<std::string>();
  if (!named(type, {Arch::Llama, Arch::Mistral, Arch::Qwen2, Arch::Qwen3}, arch_name, &c.arch))
    fail(where, ": model_type \"", jsonio::excerpt(type),
         "\" is not supported (supported: llama, mistral, qwen2, qwen3)");

  // transformers' per-architecture defaults for absent keys.
  const bool llama = c.arch == Arch::Llama, mistral = c.arch == Arch::Mistral, qwen3 = c.arch == Arch::Qwen3;
  c.vocab_size = r.integer("vocab_size", llama || mistral ? 32000 : 151936);
  c.hidden_size = r.integer("hidden_size", 4096);
  c.intermediate_size = r.integer("intermediate_size", llama ? 11008 : mistral ? 14336 : 22016);
  c.num_hidden_layers = r.integer("num_hidden_layers", 32);
  c.num_attention_heads = r.integer("num_attention_heads", 32);
  c.num_key_value_heads = r.integer("num_key_value_heads", mistral ? 8 : c.num_attention_heads);
  c.qk_norm = qwen3;
  c.max_position_embeddings = r.integer("max_position_embeddings", llama ? 2048 : mistral ? 4096 * 32 : 32768);
  c.rms_norm_eps = r.number("rms_norm_eps", 1e-6);
  c.rope_theta = r.number("rope_theta", 10000.0);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  c.bos_token_id = r.token_id("bos_token_id");
  c.eos_token_id = r.token_id("eos_token_id");
  c.pad_token_id = r.token_id("pad_token_id");
  c.hidden_act = r.string("hidden_act", c.hidden_act);
  MS_CHECK(c.hidden_act == "silu" || c.hidden_act == "swish", where, ": hidden_act \"",
           jsonio::excerpt(c.hidden_act), "\" is not supported (Llama/Mistral/Qwen2 use silu)");
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (r.present(key) && j[key].is_string()) {
      DType t;
      MS_CHECK(dtype_from_torch_name(j[key].get<std::string>(), &t), where, ": \"", key, "\" ",
               jsonio::describe(j[key]), " is not one of float32, bfloat16, float16");
      c.torch_dtype = t;
    }
  }
  parse_rope(j, where, c);

  // Biases: Qwen2 always has q/k/v biases and no o bias; Llama's and Qwen3's attention_bias put a bias on all four.
  if (c.arch == Arch::Qwen2) {
    c.qkv_bias = true;
  } else {
    c.qkv_bias = c.o_bias = r.boolean("attention_bias", false);
  }
  MS_CHECK(!r.boolean("mlp_bias", false), where, ": \"mlp_bias\": true is not supported");

  // Validation of the shapes before anything is derived from them.
  // The upper bounds are far beyond any real model (Llama-3.1-405B: d 16384, I 53248, L 126, H 128) and keep
  // every product of sizes (parameter counts, bytes, per-layer tables) well inside int64.
  for (auto [key, v, most] : {std::tuple{"hidden_size", c.hidden_size, kMaxWidth},
                              {"intermediate_size", c.intermediate_size, kMaxWidth},
                              {"num_hidden_layers", c.num_hidden_layers, kMaxLayers},
                              {"num_attention_heads", c.num_attention_heads, kMaxHeads},
                              {"num_key_value_heads", c.num_key_value_heads, kMaxHeads},
                              {"vocab_size", c.vocab_size, kMaxVocab},
                              {"max_position_embeddings", c.max_position_embeddings, kMaxPositions}}) {
    MS_CHECK(v > 0, where, ": \"", key, "\" must be positive, found ", v);
    MS_CHECK(v <= most, where, ": \"", key, "\" is ", v, ", beyond the ", most,
             " that miniseq accepts; the config is corrupt");
  }
  if (r.present("head_dim") || qwen3) {  // Qwen3Config's head_dim defaults to 128, not hidden / heads
    c.head_dim = r.integer("head_dim", 128);
    MS_CHECK(c.head_dim > 0, where, ": \"head_dim\" must be positive");
    MS_CHECK(c.head_dim <= kMaxHeadDim, where, ": \"head_dim\" is ", c.head_dim, ", beyond the ", kMaxHeadDim,
             " that miniseq accepts; the config is corrupt");
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
  if (c.rope.type == RopeType::Yarn) {
    if (c.rope.original_max_position_embeddings == 0) c.rope.original_max_position_embeddings = c.max_position_embeddings;
  }
  for (auto [key, id] : {std::pair{"bos_token_id", c.bos_token_id}, {"eos_token_id", c.eos_token_id},
                         {"pad_token_id", c.pad_token_id}})
    MS_CHECK(!id || (*id >= 0 && *id < c.vocab_size), where, ": \"", key, "\" ", *id, " is outside the vocabulary [0, ",
             c.vocab_size, ")");
  c.embedding_padding_idx = c.pad_token_id;

  // Sliding window per layer.
  c.sliding_window.assign(static_cast<size_t>(c.num_hidden_layers), 0);
  // MistralConfig, Qwen2Config and Qwen3Config default to a 4096 window when the key is absent (Qwen's is used
  // only with use_sliding_window); null means full attention. Llama has none.
  int64_t window = j.contains("sliding_window") ? r.integer("sliding_window", 0) : (llama ? 0 : 4096);
  MS_CHECK(window >= 0, where, ": \"sliding_window\" must be positive or null");
  if (c.arch == Arch::Mistral) {
    for (auto& w : c.sliding_window) w = window;
  } else if ((c.arch == Arch::Qwen2 || qwen3) && r.boolean("use_sliding_window", false) && window > 0) {
    if (r.present("layer_types")) {  // transformers 5 writes the per-layer kinds out
      const json& lt = j["layer_types"];
      MS_CHECK(lt.is_array() && static_cast<int64_t>(lt.size()) == c.num_hidden_layers, where,
               ": \"layer_types\" must list one entry per layer (", c.num_hidden_layers, ")");
      for (size_t l = 0; l < lt.size(); ++l) {
        MS_CHECK(lt[l].is_string() && (lt[l] == "full_attention" || lt[l] == "sliding_attention"), where,
                 ": layer_types[", l, "] must be \"full_attention\" or \"sliding_attention\"");
        if (lt[l] == "sliding_attention") c.sliding_window[l] = window;
      }
    } else {
      int64_t first = r.integer("max_window_layers", 28);
      for (int64_t l = std::max<int64_t>(first, 0); l < c.num_hidden_layers; ++l)
        c.sliding_window[static_cast<size_t>(l)] = window;
    }
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
                        : arch == Arch::Qwen2   ? "Qwen2ForCausalLM"
                                                : "Qwen3ForCausalLM"};
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
  if (arch == Arch::Llama || arch == Arch::Qwen3) j["attention_bias"] = qkv_bias;
  if (bos_token_id) j["bos_token_id"] = *bos_token_id;
  if (eos_token_id) j["eos_token_id"] = *eos_token_id;
  if (pad_token_id) j["pad_token_id"] = *pad_token_id;
  j["torch_dtype"] = torch_dtype == DType::F32 ? "float32" : torch_dtype == DType::BF16 ? "bfloat16" : "float16";
  // Rope: write the classic keys (which every transformers version reads), and keep rope_parameters in step.
  j["rope_theta"] = rope_theta;
  if (rope.type == RopeType::Default || rope.type == RopeType::Linear) {
    const bool lin = rope.type == RopeType::Linear;
    if (lin) j["rope_scaling"] = {{"type", "linear"}, {"rope_type", "linear"}, {"factor", rope.factor}};
    else j["rope_scaling"] = nullptr;
    if (j.contains("rope_parameters")) {
      j["rope_parameters"] = {{"rope_type", lin ? "linear" : "default"}, {"rope_theta", rope_theta}};
      if (lin) j["rope_parameters"]["factor"] = rope.factor;
    }
    return j;
  }
  // dynamic, yarn, llama3: the dicts as they were read (every parameter survives unchanged), with the factor
  // updated where the trainer changed it (model_setup.cpp).
  bool written = false;
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    if (!j.contains(key) || !j[key].is_object() || j[key].empty()) continue;
    json& d = j[key];
    written = true;
    if (!(d.contains("factor") && d["factor"].is_number() && d["factor"].get<double>() == rope.factor))
      d["factor"] = rope.factor;
  }
  if (!written) {
    json d = {{"rope_type", std::string(rope_type_name(rope.type))}, {"factor", rope.factor}};
    if (rope.type != RopeType::Dynamic)
      d["original_max_position_embeddings"] = rope.original_max_position_embeddings;
    if (rope.type == RopeType::Llama3) {
      d["low_freq_factor"] = rope.low_freq_factor;
      d["high_freq_factor"] = rope.high_freq_factor;
    }
    if (rope.type == RopeType::Yarn) {
      for (auto [k, v] : {std::pair{"attention_factor", rope.attention_factor}, {"beta_fast", rope.beta_fast},
                          {"beta_slow", rope.beta_slow}, {"mscale", rope.mscale}, {"mscale_all_dim", rope.mscale_all_dim}})
        if (v) d[k] = *v;
      if (!rope.truncate) d["truncate"] = false;
    }
    j["rope_scaling"] = d;
  }
  return j;
}

}  // namespace miniseq
