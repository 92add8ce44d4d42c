#include "miniseq/model/param_spec.h"

namespace miniseq {

std::string_view param_kind(ParamRole r) {
  switch (r) {
    case ParamRole::Embedding: return "embedding";
    case ParamRole::InputNorm:
    case ParamRole::QNorm:
    case ParamRole::KNorm:
    case ParamRole::PostAttnNorm:
    case ParamRole::FinalNorm: return "norm";
    case ParamRole::GateProj:
    case ParamRole::UpProj:
    case ParamRole::DownProj: return "mlp";
    case ParamRole::LmHead: return "lm_head";
    case ParamRole::LoraA:
    case ParamRole::LoraB: return "lora";
    default: return "attention";
  }
}

std::vector<ParamSpec> param_specs(const ModelConfig& c) {
  const int64_t d = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int64_t qd = c.q_dim(), kvd = c.kv_dim();
  std::vector<ParamSpec> s;
  s.push_back({"model.embed_tokens.weight", {V, d}, ParamRole::Embedding});
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    s.push_back({p + "input_layernorm.weight", {d}, ParamRole::InputNorm, l});
    s.push_back({p + "self_attn.q_proj.weight", {qd, d}, ParamRole::QProj, l});
    if (c.qkv_bias) s.push_back({p + "self_attn.q_proj.bias", {qd}, ParamRole::QBias, l});
    s.push_back({p + "self_attn.k_proj.weight", {kvd, d}, ParamRole::KProj, l});
    if (c.qkv_bias) s.push_back({p + "self_attn.k_proj.bias", {kvd}, ParamRole::KBias, l});
    s.push_back({p + "self_attn.v_proj.weight", {kvd, d}, ParamRole::VProj, l});
    if (c.qkv_bias) s.push_back({p + "self_attn.v_proj.bias", {kvd}, ParamRole::VBias, l});
    s.push_back({p + "self_attn.o_proj.weight", {d, qd}, ParamRole::OProj, l});
    if (c.o_bias) s.push_back({p + "self_attn.o_proj.bias", {d}, ParamRole::OBias, l});
    if (c.qk_norm) {
      s.push_back({p + "self_attn.q_norm.weight", {c.head_dim}, ParamRole::QNorm, l});
      s.push_back({p + "self_attn.k_norm.weight", {c.head_dim}, ParamRole::KNorm, l});
    }
    s.push_back({p + "post_attention_layernorm.weight", {d}, ParamRole::PostAttnNorm, l});
    s.push_back({p + "mlp.gate_proj.weight", {I, d}, ParamRole::GateProj, l});
    s.push_back({p + "mlp.up_proj.weight", {I, d}, ParamRole::UpProj, l});
    s.push_back({p + "mlp.down_proj.weight", {d, I}, ParamRole::DownProj, l});
  }
  s.push_back({"model.norm.weight", {d}, ParamRole::FinalNorm});
  if (!c.tie_word_embeddings) s.push_back({"lm_head.weight", {V, d}, ParamRole::LmHead});
  return s;
}

int64_t param_count(const std::vector<ParamSpec>& specs) {
  int64_t n = 0;
  for (const auto& p : specs) n += p.shape.numel();
  return n;
}

}  // namespace miniseq
