// The parameter table of a model, derived from its config: Hugging Face names, shapes (PyTorch order, linear
// weights [out, in]) and roles. One walk over it loads, saves, zeroes gradients, computes norms, updates the
// optimizer and compares against goldens (style.md: gemma.cpp's ForEachTensor).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "miniseq/core/tensor.h"
#include "miniseq/io/model_config.h"

namespace miniseq {

enum class ParamRole : uint8_t {
  Embedding,      // model.embed_tokens.weight                      [V, d]
  InputNorm,      // model.layers.{l}.input_layernorm.weight          [d]
  QProj,          // model.layers.{l}.self_attn.q_proj.weight         [H*D, d]
  KProj,          // model.layers.{l}.self_attn.k_proj.weight         [Hkv*D, d]
  VProj,          // model.layers.{l}.self_attn.v_proj.weight         [Hkv*D, d]
  QBias,          // model.layers.{l}.self_attn.q_proj.bias           [H*D]
  KBias,          // model.layers.{l}.self_attn.k_proj.bias           [Hkv*D]
  VBias,          // model.layers.{l}.self_attn.v_proj.bias           [Hkv*D]
  OProj,          // model.layers.{l}.self_attn.o_proj.weight         [d, H*D]
  OBias,          // model.layers.{l}.self_attn.o_proj.bias           [d]
  QNorm,          // model.layers.{l}.self_attn.q_norm.weight         [D]   (Qwen3)
  KNorm,          // model.layers.{l}.self_attn.k_norm.weight         [D]   (Qwen3)
  PostAttnNorm,   // model.layers.{l}.post_attention_layernorm.weight [d]
  GateProj,       // model.layers.{l}.mlp.gate_proj.weight            [I, d]
  UpProj,         // model.layers.{l}.mlp.up_proj.weight              [I, d]
  DownProj,       // model.layers.{l}.mlp.down_proj.weight            [d, I]
  FinalNorm,      // model.norm.weight                                [d]
  LmHead,         // lm_head.weight                                   [V, d] (absent when tied)
  LoraA,          // base_model.model.model.layers.{l}.<module>.lora_A.weight [r, in]  (LoRA, model/lora.h)
  LoraB,          // base_model.model.model.layers.{l}.<module>.lora_B.weight [out, r]
};

// Coarse kinds for reports ("embedding", "attention", "mlp", "norm", "lm_head").
std::string_view param_kind(ParamRole r);

struct ParamSpec {
  std::string name;  // Hugging Face name
  Shape shape;
  ParamRole role;
  int layer = -1;    // -1 for model-level parameters
  ParamRole target = ParamRole::Embedding;  // LoraA / LoraB only: the role of the adapted weight (QProj, …)
};

// In Hugging Face's module order: embeddings, layers 0..L-1, final norm, lm_head.
std::vector<ParamSpec> param_specs(const ModelConfig& c);

int64_t param_count(const std::vector<ParamSpec>& specs);

}  // namespace miniseq
