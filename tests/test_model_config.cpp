// config.json parsing, defaults, validation errors, and the parameter table derived from it.
#include <gtest/gtest.h>

#include "miniseq/io/model_config.h"
#include "miniseq/model/param_spec.h"

using namespace miniseq;

namespace {

const char* kMistral7B = R"({
  "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
  "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 32768,
  "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": false,
  "torch_dtype": "bfloat16", "transformers_version": "4.34.0.dev0", "use_cache": true, "vocab_size": 32000})";

void expect_config_error(const std::string& json, const std::string& fragment) {
  try {
    parse_model_config(json, "cfg.json");
    ADD_FAILURE() << "no error; expected " << fragment;
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
    EXPECT_NE(msg.find("cfg.json"), std::string::npos) << msg;
  }
}

}  // namespace

TEST(ModelConfig, Mistral7B) {
  ModelConfig c = parse_model_config(kMistral7B, "mistral");
  EXPECT_EQ(c.arch, Arch::Mistral);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.kv_dim(), 1024);
  EXPECT_EQ(c.sliding_window.size(), 32u);
  EXPECT_EQ(c.sliding_window[31], 4096);
  EXPECT_EQ(c.torch_dtype, DType::BF16);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(*c.eos_token_id, 2);
  auto specs = param_specs(c);
  EXPECT_EQ(specs.size(), 1u + 32u * 9u + 2u);
  EXPECT_EQ(param_count(specs), 7241732096);  // Mistral-7B-v0.1's published parameter count
  EXPECT_EQ(specs[1].name, "model.layers.0.input_layernorm.weight");
  EXPECT_EQ(specs.back().name, "lm_head.weight");
}

TEST(ModelConfig, Llama3AndQwen2Tables) {
  ModelConfig l3 = parse_model_config(R"({"model_type":"llama","hidden_size":4096,"intermediate_size":14336,
    "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"vocab_size":128256,
    "max_position_embeddings":8192,"rope_theta":500000.0,"rms_norm_eps":1e-5,"bos_token_id":128000,
    "eos_token_id":128001})",
                                      "llama3");
  EXPECT_EQ(param_count(param_specs(l3)), 8030261248);  // Meta-Llama-3-8B
  EXPECT_EQ(l3.rope_theta, 500000.0);
  EXPECT_EQ(l3.max_sliding_window(), 0);

  ModelConfig q = parse_model_config(R"({"model_type":"qwen2","hidden_size":896,"intermediate_size":4864,
    "num_hidden_layers":24,"num_attention_heads":14,"num_key_value_heads":2,"vocab_size":151936,
    "tie_word_embeddings":true,"use_sliding_window":false,"sliding_window":32768,"max_window_layers":21})",
                                     "qwen2");
  EXPECT_TRUE(q.qkv_bias);
  EXPECT_FALSE(q.o_bias);
  EXPECT_EQ(q.max_sliding_window(), 0);  // use_sliding_window false
  auto specs = param_specs(q);
  EXPECT_EQ(param_count(specs), 494032768);  // Qwen2-0.5B
  EXPECT_EQ(specs.back().name, "model.norm.weight");  // tied: no lm_head.weight
  bool has_bias = false;
  for (const auto& s : specs) has_bias |= s.name == "model.layers.3.self_attn.k_proj.bias";
  EXPECT_TRUE(has_bias);

  ModelConfig qsw = parse_model_config(R"({"model_type":"qwen2","num_hidden_layers":4,"hidden_size":64,
    "num_attention_heads":4,"intermediate_size":128,"vocab_size":100,"use_sliding_window":true,"sliding_window":16,
    "max_window_layers":2})",
                                       "qwen2sw");
  EXPECT_EQ(qsw.sliding_window, (std::vector<int64_t>{0, 0, 16, 16}));
}

TEST(ModelConfig, DefaultsAndRopeForms) {
  ModelConfig c = parse_model_config(R"({"model_type":"llama"})", "defaults");
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 11008);
  EXPECT_EQ(c.num_key_value_heads, 32);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_EQ(c.rms_norm_eps, 1e-6);
  ModelConfig m = parse_model_config(R"({"model_type":"mistral"})", "defaults");
  EXPECT_EQ(m.sliding_window[0], 4096);  // MistralConfig's default
  ModelConfig mn = parse_model_config(R"({"model_type":"mistral","sliding_window":null})", "null window");
  EXPECT_EQ(mn.max_sliding_window(), 0);

  ModelConfig lin = parse_model_config(R"({"model_type":"llama","rope_scaling":{"type":"linear","factor":8.0}})", "a");
  EXPECT_EQ(lin.rope.type, RopeType::Linear);
  EXPECT_EQ(lin.rope.factor, 8.0);
  ModelConfig lin2 =
      parse_model_config(R"({"model_type":"llama","rope_scaling":{"rope_type":"linear","factor":4.0}})", "b");
  EXPECT_EQ(lin2.rope.factor, 4.0);
  ModelConfig v5 = parse_model_config(
      R"({"model_type":"llama","rope_parameters":{"rope_type":"linear","rope_theta":5e5,"factor":2.0},"dtype":"float32"})",
      "c");
  EXPECT_EQ(v5.rope.factor, 2.0);
  EXPECT_EQ(v5.rope_theta, 5e5);
  EXPECT_EQ(v5.torch_dtype, DType::F32);
  // to_json writes the classic keys and round-trips.
  ModelConfig back = parse_model_config(v5.to_json().dump(), "d");
  EXPECT_EQ(back.rope.factor, 2.0);
  EXPECT_EQ(back.rope_theta, 5e5);
  EXPECT_EQ(back.to_json()["rope_scaling"]["type"], "linear");
}

TEST(ModelConfig, ValidationErrors) {
  expect_config_error("{", "malformed JSON");
  expect_config_error(R"({"hidden_size": 8})", "no \"model_type\"");
  expect_config_error(R"({"model_type":"gpt2"})", "model_type \"gpt2\" is not supported");
  expect_config_error(R"({"model_type":"llama","hidden_size":100,"num_attention_heads":3})",
                      "num_attention_heads 3 does not divide hidden_size 100");
  expect_config_error(R"({"model_type":"llama","num_attention_heads":32,"num_key_value_heads":5})",
                      "num_key_value_heads 5 does not divide num_attention_heads 32");
  expect_config_error(R"({"model_type":"llama","rope_scaling":{"type":"longrope","factor":2.0}})",
                      "rope scaling type \"longrope\" is not supported");
  expect_config_error(R"({"model_type":"llama","rope_scaling":{"rope_type":"llama3","factor":8.0}})",
                      "llama3 rope scaling needs rope_scaling.original_max_position_embeddings");
  expect_config_error(R"({"model_type":"llama","rope_scaling":{"rope_type":"llama3","factor":8.0,)"
                      R"("original_max_position_embeddings":8192,"low_freq_factor":1.0}})",
                      "needs a numeric rope_scaling.high_freq_factor");
  expect_config_error(R"({"model_type":"llama","rope_parameters":{"rope_type":"yarn","rope_theta":1e4}})",
                      "yarn rope scaling needs a numeric rope_parameters.factor");
  expect_config_error(R"({"model_type":"llama","rope_scaling":{"type":"dynamic","factor":0.5}})",
                      "factor 0.5 must be >= 1");
  expect_config_error(R"({"model_type":"llama","rope_scaling":{"type":"linear","factor":2,"partial_rotary_factor":0.5}})",
                      "partial_rotary_factor 0.5 is not supported");
  expect_config_error(R"({"model_type":"qwen3","use_sliding_window":true,"num_hidden_layers":2,)"
                      R"("layer_types":["full_attention"]})",
                      "\"layer_types\" must list one entry per layer (2)");
  expect_config_error(R"({"model_type":"llama","hidden_size":"big"})", "\"hidden_size\" must be an integer");
  expect_config_error(R"({"model_type":"llama","num_hidden_layers":0})", "\"num_hidden_layers\" must be positive");
  expect_config_error(R"({"model_type":"llama","vocab_size":10,"eos_token_id":12})", "outside the vocabulary");
  expect_config_error(R"({"model_type":"llama","hidden_act":"gelu"})", "hidden_act \"gelu\"");
  expect_config_error(R"({"model_type":"llama","torch_dtype":"int8"})", "not one of float32");
  expect_config_error(R"({"model_type":"llama","hidden_size":96,"num_attention_heads":32})", "must be even");
}

TEST(ModelConfig, LlamaAttentionBiasAndHeadDim) {
  ModelConfig c = parse_model_config(R"({"model_type":"llama","hidden_size":64,"num_attention_heads":4,
    "num_key_value_heads":2,"head_dim":32,"attention_bias":true,"intermediate_size":100,"vocab_size":50,
    "num_hidden_layers":1})",
                                     "bias");
  EXPECT_EQ(c.q_dim(), 128);
  auto specs = param_specs(c);
  std::vector<std::string> names;
  for (const auto& s : specs) names.push_back(s.name);
  EXPECT_NE(std::find(names.begin(), names.end(), "model.layers.0.self_attn.o_proj.bias"), names.end());
  for (const auto& s : specs) {
    if (s.name == "model.layers.0.self_attn.o_proj.weight") {
      EXPECT_EQ(s.shape, Shape({64, 128}));
    }
  }
}

namespace {
ModelConfig bench_config(const std::string& name) {
  return load_model_config(std::string(MINISEQ_SOURCE_DIR) + "/bench/configs/" + name);
}
}  // namespace

// The checkpoints users start from today (bench/configs, the published config.json values): their parameter
// counts are the published ones, and their rope scaling reads as transformers reads it.
TEST(ModelConfig, CurrentCheckpoints) {
  ModelConfig l31 = bench_config("llama-3.1-8b.json");
  EXPECT_EQ(param_count(param_specs(l31)), 8030261248);  // Llama-3.1-8B
  EXPECT_EQ(l31.rope.type, RopeType::Llama3);
  EXPECT_EQ(l31.rope.factor, 8.0);
  EXPECT_EQ(l31.rope.original_max_position_embeddings, 8192);
  EXPECT_EQ(l31.rope.low_freq_factor, 1.0);
  EXPECT_EQ(l31.rope.high_freq_factor, 4.0);
  EXPECT_EQ(l31.native_context(), 131072);

  ModelConfig l32 = bench_config("llama-3.2-1b.json");
  EXPECT_EQ(param_count(param_specs(l32)), 1235814400);  // Llama-3.2-1B, tied embeddings counted once
  EXPECT_TRUE(l32.tie_word_embeddings);
  EXPECT_EQ(l32.head_dim, 64);
  EXPECT_EQ(l32.rope.factor, 32.0);

  ModelConfig q25 = bench_config("qwen2.5-7b-yarn.json");
  EXPECT_EQ(param_count(param_specs(q25)), 7615616512);  // Qwen2.5-7B
  EXPECT_EQ(q25.rope.type, RopeType::Yarn);
  EXPECT_EQ(q25.rope.factor, 4.0);
  EXPECT_EQ(q25.native_context(), 131072);
  EXPECT_EQ(q25.max_sliding_window(), 0);  // use_sliding_window false

  ModelConfig q3 = bench_config("qwen3-8b.json");
  EXPECT_EQ(q3.arch, Arch::Qwen3);
  EXPECT_EQ(param_count(param_specs(q3)), 8190735360);  // Qwen3-8B
  EXPECT_TRUE(q3.qk_norm);
  EXPECT_FALSE(q3.qkv_bias);
  EXPECT_EQ(q3.head_dim, 128);
  EXPECT_EQ(q3.rope.type, RopeType::Default);
  const auto specs = param_specs(q3);
  EXPECT_EQ(specs[6].name, "model.layers.0.self_attn.q_norm.weight");  // after o_proj, in HF's module order
  EXPECT_EQ(specs[6].shape.numel(), 128);
  EXPECT_EQ(specs[7].name, "model.layers.0.self_attn.k_norm.weight");
}

// Qwen3Config's defaults (head_dim 128 whatever hidden / heads), attention_bias on all four projections, and
// the per-layer sliding window from layer_types.
TEST(ModelConfig, Qwen3DefaultsBiasAndLayerTypes) {
  ModelConfig d = parse_model_config(R"({"model_type":"qwen3","hidden_size":1024,"num_attention_heads":16})", "d");
  EXPECT_EQ(d.head_dim, 128);
  EXPECT_EQ(d.q_dim(), 2048);
  EXPECT_EQ(d.vocab_size, 151936);
  ModelConfig b = parse_model_config(R"({"model_type":"qwen3","attention_bias":true})", "b");
  EXPECT_TRUE(b.qkv_bias);
  EXPECT_TRUE(b.o_bias);
  ModelConfig w = parse_model_config(R"({"model_type":"qwen3","num_hidden_layers":3,"use_sliding_window":true,
    "sliding_window":64,"layer_types":["sliding_attention","full_attention","sliding_attention"]})",
                                     "w");
  EXPECT_EQ(w.sliding_window, (std::vector<int64_t>{64, 0, 64}));
  EXPECT_EQ(w.to_json()["architectures"][0], "Qwen3ForCausalLM");
}

// Saved configs keep the rope dict as read (every parameter, either layout); only a changed factor is written.
TEST(ModelConfig, RopeDictsSurviveASave) {
  ModelConfig l31 = bench_config("llama-3.1-8b.json");
  nlohmann::json j = l31.to_json();
  EXPECT_EQ(j["rope_scaling"], l31.original["rope_scaling"]);
  l31.rope.factor = 16.0;
  j = l31.to_json();
  EXPECT_EQ(j["rope_scaling"]["factor"], 16.0);
  EXPECT_EQ(j["rope_scaling"]["original_max_position_embeddings"], 8192);
  EXPECT_EQ(j["rope_scaling"]["rope_type"], "llama3");
  ModelConfig back = parse_model_config(j.dump(), "back");
  EXPECT_EQ(back.rope.type, RopeType::Llama3);
  EXPECT_EQ(back.rope.factor, 16.0);

  ModelConfig yarn = parse_model_config(R"({"model_type":"qwen2","rope_parameters":{"rope_type":"yarn",
    "rope_theta":1e6,"factor":4.0,"original_max_position_embeddings":32768,"beta_fast":16}})",
                                        "y");
  EXPECT_EQ(yarn.rope_theta, 1e6);
  EXPECT_EQ(*yarn.rope.beta_fast, 16.0);
  j = yarn.to_json();
  EXPECT_EQ(j["rope_parameters"], yarn.original["rope_parameters"]);
  ModelConfig yback = parse_model_config(j.dump(), "yback");
  EXPECT_EQ(yback.rope.type, RopeType::Yarn);
  EXPECT_EQ(*yback.rope.beta_fast, 16.0);
  EXPECT_EQ(yback.rope_theta, 1e6);
}
