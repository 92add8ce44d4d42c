// Decoder forward and backward with per-layer activation checkpointing and mini-sequence (MsT) MLP and LM
// head.
//
// Forward (checkpointing): x = embed(ids); for l: ckpt[l] = x; layer l (transient working set) updates x;
//                          head: final norm, then per chunk logits -> loss and dlogits -> dx, dW_lm (MsT).
// Backward:                for l = L-1..0: recompute layer l from ckpt[l] up to what backward needs, then the
//                          MLP backward chunk by chunk (recomputing gate/up/act per chunk), attention
//                          backward, norm backwards; dx flows to layer l-1. Finally the embedding gradient.
// Without checkpointing every layer keeps its Saved tensors (resident); without MsT the MLP keeps gate/up/act
// whole and the LM head runs as one chunk.
#include "miniseq/model/decoder.h"
#include "miniseq/model/decoder_detail.h"
#include "miniseq/model/rope_scaling.h"

#include <algorithm>
#include <optional>
#include <string>

namespace miniseq {

Decoder::Step Decoder::make_step(int64_t B, int64_t S, const StepPolicy& policy, bool training) const {
  Step st;
  // Sequence parallelism (training): this rank's S/P tokens of each sequence, the global positions.
  const SequenceParallel* sp = training && sp_ ? &*sp_ : nullptr;
  const int64_t P = sp ? sp->size : 1;
  MS_CHECK(S % P == 0, "sequence parallelism over ", P, " ranks needs a sequence length divisible by ", P,
           "; the batch has ", S, " tokens per sequence (choose --model_max_length divisible by ", P, ")");
  const int64_t H = config_.num_attention_heads, Hkv = config_.num_key_value_heads;
  st.B = B, st.S = S / P, st.T = B * st.S;
  st.d = config_.hidden_size, st.qd = config_.q_dim(), st.kvd = config_.kv_dim();
  st.I = config_.intermediate_size, st.V = config_.vocab_size;
  const int64_t first = sp ? sp->rank * st.S : 0;
  st.positions.resize(static_cast<size_t>(st.S));
  for (int64_t s = 0; s < st.S; ++s) st.positions[static_cast<size_t>(s)] = static_cast<int32_t>(first + s);
  st.ids = nullptr;
  st.policy = policy;
  st.mlp_rows = policy.mlp_chunk_rows(config_, st.T);
  st.saved_cat = policy.checkpointing ? MemCategory::TransientActivations : MemCategory::ResidentActivations;
  st.loss_scale = 0.0f;
  st.rope = rope_params(config_, S);
  st.s2_group = training ? policy.s2_group(S) : 0;
  st.sp = sp;
  st.S_attn = S;
  st.Hl = H / P, st.Hkvl = std::max<int64_t>(1, Hkv / P);
  st.head_offset = sp ? sp->rank * st.Hl : 0;
  return st;
}

AttentionParams Decoder::attention_params(const Step& st, int l) const {
  AttentionParams ap;
  ap.causal = true;
  ap.sliding_window = config_.sliding_window[static_cast<size_t>(l)];
  ap.s2_group = st.s2_group;
  if (st.sp) ap.head_offset = st.head_offset, ap.heads_total = config_.num_attention_heads;
  return ap;
}

void Decoder::set_sequence_parallel(const SequenceParallel& sp) {
  const std::string problem =
      sequence_parallel_heads_problem(config_.num_attention_heads, config_.num_key_value_heads, sp.size);
  MS_CHECK(problem.empty(), "--sequence_parallel ", sp.size, ": ", problem);
  MS_CHECK(sp.rank >= 0 && sp.rank < sp.size, "internal: sequence-parallel rank ", sp.rank, " of ", sp.size);
  sp_ = sp;
}

ScratchShape Decoder::scratch_shape(const Step& st, int64_t loss_rows, bool backward) const {
  ScratchShape s;
  // With sequence parallelism too: the ops run on this rank's S tokens (RoPE's table, the ids), and attention's
  // row terms over Hl heads of S_attn positions are as many as H heads of S (Hl · S_attn = H · S).
  s.B = st.B, s.S = st.S;
  s.H = config_.num_attention_heads, s.D = config_.head_dim;
  s.norm_cols = std::max(config_.hidden_size, config_.head_dim);
  if (config_.qkv_bias || config_.o_bias) s.bias_cols = std::max({st.qd, st.kvd, st.d});
  s.loss_rows = loss_rows;
  s.backward = backward;
  return s;
}

Decoder::Decoder(const ModelConfig& config, Backend& backend, MemoryPlan& plan, GradStorage storage,
                 const LoraConfig& lora)
    : config_(config),
      be_(backend),
      plan_(plan),
      act_(backend.activation_dtype()),
      storage_(storage),
      lora_(lora),
      weights_(plan, model_param_specs(config, lora), backend.param_dtype(), MemCategory::Weights),
      trained_(ParamSet::view_of(weights_, trainable_specs(config, lora))) {
  if (storage_ == GradStorage::Persistent)
    grads_.emplace(plan, trainable_specs(config, lora), backend.grad_dtype(), MemCategory::Grads, "grad:");
  for (int l = 0; l < config_.num_hidden_layers; ++l) {
    w_layers_.push_back(layer_params(weights_, l));
    if (grads_) g_layers_.push_back(layer_params(*grads_, l));
  }
}

void Decoder::set_checkpoint_offload(MemoryPlan* host, int64_t layers) {
  host_ = host;
  offload_layers_ = layers < 0 ? config_.num_hidden_layers : std::min(layers, config_.num_hidden_layers);
  MS_CHECK(offload_layers_ == 0 || host_, "internal: checkpoint offload without a host plan");
}

const ParamSet& Decoder::grads() const {
  MS_CHECK(grads_, "internal: gradients are not kept with the optimizer in backward");
  return *grads_;
}

ParamSet Decoder::group_grads(const std::vector<ParamSpec>& specs) {
  ParamSet g(plan_, specs, be_.grad_dtype(), MemCategory::Grads, "grad:");
  g.for_each([&](const ParamSpec&, const Tensor& t) { be_.fill_zero(t); });
  return g;
}

uint64_t Decoder::hand_over(GradSink* sink, const ParamSet& grads) {
  std::vector<const ParamSpec*> specs;
  std::vector<Tensor> tensors;
  grads.for_each([&](const ParamSpec& s, const Tensor& t) {
    specs.push_back(&s);
    tensors.push_back(t);
  });
  return sink ? sink->consume(specs, tensors) : 0;
}

Decoder::LayerParams Decoder::layer_params(const ParamSet& set, int l) const {
  const std::string p = "model.layers." + std::to_string(l) + ".";
  auto linear = [&](const std::string& module) {  // "self_attn.q_proj"
    Linear lin;
    lin.w = set.find(p + module + ".weight");
    lin.bias = set.find(p + module + ".bias");
    lin.lora_a = set.find("base_model.model." + p + module + ".lora_A.weight");
    lin.lora_b = set.find("base_model.model." + p + module + ".lora_B.weight");
    return lin;
  };
  LayerParams lp;
  lp.in_norm = set.find(p + "input_layernorm.weight");
  lp.post_norm = set.find(p + "post_attention_layernorm.weight");
  lp.q_norm = set.find(p + "self_attn.q_norm.weight");
  lp.k_norm = set.find(p + "self_attn.k_norm.weight");
  lp.q = linear("self_attn.q_proj"), lp.k = linear("self_attn.k_proj"), lp.v = linear("self_attn.v_proj");
  lp.o = linear("self_attn.o_proj");
  lp.gate = linear("mlp.gate_proj"), lp.up = linear("mlp.up_proj"), lp.down = linear("mlp.down_proj");
  return lp;
}

void Decoder::proj_forward(const Linear& w, const Tensor& x, const Tensor& y) {
  if (!w.lora_a) {
    be_.linear_forward(x, *w.w, w.bias, y);
    return;
  }
  const int64_t rows = x.numel() / w.w->size(1), r = w.lora_a->size(0);
  Buffer xa = plan_.alloc("lora.xa", {rows, r}, act_, MemCategory::TransientActivations);  // [rows, r]
  std::optional<Buffer> work;
  if (const int64_t n = be_.lora_workspace_elems(r, w.w->size(0)); n > 0)
    work = plan_.alloc("lora.work", {n}, act_, MemCategory::Workspace);
  LoraBranch lb;
  lb.a = w.lora_a, lb.b = w.lora_b, lb.scale = lora_.scale(), lb.xa = xa;
  if (work) lb.work = *work;
  be_.lora_linear_forward(x, *w.w, w.bias, lb, y);
}

void Decoder::proj_backward(const Linear& w, const Linear& g, const Tensor& dy, const Tensor& x,
                            const Tensor& dx, bool dx_accum) {
  if (!w.lora_a) {
    be_.linear_backward(dy, x, *w.w, dx, g.w, g.bias, dx_accum);
    return;
  }
  const int64_t rows = x.numel() / w.w->size(1), r = w.lora_a->size(0);
  Buffer xa = plan_.alloc("lora.xa", {rows, r}, act_, MemCategory::TransientActivations);    // [rows, r]
  Buffer dxa = plan_.alloc("lora.dxa", {rows, r}, act_, MemCategory::TransientActivations);  // [rows, r]
  LoraBranch lb;
  lb.a = w.lora_a, lb.b = w.lora_b, lb.scale = lora_.scale(), lb.xa = xa, lb.dxa = dxa;
  lb.da = g.lora_a, lb.db = g.lora_b;
  be_.lora_linear_backward(dy, x, *w.w, dx, g.w, g.bias, lb, dx_accum);
}

void Decoder::zero_grads() {
  if (grads_) grads_->for_each([&](const ParamSpec&, const Tensor& g) { be_.fill_zero(g); });
}

void Decoder::mlp_forward_chunk(const Step& st, int l, const Tensor& x, Saved& s, const Tensor* rstd2,
                                int64_t r0, int64_t C) {
  const LayerParams& w = w_layers_[static_cast<size_t>(l)];
  const MemCategory tr = MemCategory::TransientActivations;
  // The post-attention norm of this chunk's rows only (rows are independent): no [T, d] norm output exists.
  Buffer n2c = plan_.alloc("n2", {C, st.d}, act_, tr);  // [C, d]
  std::optional<Buffer> rstd_tmp;
  Tensor rstd2c;  // [C]: kept in rstd2 [T] when the backward needs it
  if (rstd2) {
    rstd2c = rstd2->rows(r0, C);
  } else {
    rstd_tmp = plan_.alloc("rstd2", {C}, DType::F32, tr);
    rstd2c = *rstd_tmp;
  }
  be_.rmsnorm_forward(x.rows(r0, C), *w.post_norm, static_cast<float>(config_.rms_norm_eps), n2c, rstd2c);
  std::optional<Buffer> gate, up, act;
  Tensor g, u, a;  // [C, I]: whole-T buffers of s only without MsT and for a backward (rstd2 given)
  if (st.policy.mini_sequence || !rstd2) {
    gate = plan_.alloc("mlp.gate", {C, st.I}, act_, tr);
    up = plan_.alloc("mlp.up", {C, st.I}, act_, tr);
    act = plan_.alloc("mlp.act", {C, st.I}, act_, tr);
    g = *gate, u = *up, a = *act;
  } else {
    g = s.gate->rows(r0, C), u = s.up->rows(r0, C), a = s.act->rows(r0, C);
  }
  proj_forward(w.gate, n2c, g);
  proj_forward(w.up, n2c, u);
  n2c.release();
  be_.swiglu_forward(g, u, a);
  Buffer out = plan_.alloc("mlp.out", {C, st.d}, act_, tr);  // [C, d]
  proj_forward(w.down, a, out);
  be_.add_inplace(x.rows(r0, C), out);
}

void Decoder::layer_forward(const Step& st, int l, const Tensor& x, Saved& s, bool finish) {
  const LayerParams& w = w_layers_[static_cast<size_t>(l)];
  const MemCategory cat = st.saved_cat;
  const int64_t H = config_.num_attention_heads, Hkv = config_.num_key_value_heads, D = config_.head_dim;
  const float eps = static_cast<float>(config_.rms_norm_eps);
  // What a backward will read (recomputation, or the forward of a run without checkpointing) is kept in s; a
  // forward whose layer is recomputed later (checkpointing) or never differentiated (inference) keeps
  // nothing.
  const bool for_backward = !finish || cat == MemCategory::ResidentActivations;

  // ---- attention block: x = x + o_proj(attention(rope(q), rope(k), v)) ----
  // The input norm's output n1 lives only until the projections have read it; the backward recomputes it from
  // the layer input (one norm) instead of keeping [T, d] through the MLP backward.
  {
    Buffer n1 = plan_.alloc("n1", {st.T, st.d}, act_, MemCategory::TransientActivations);
    Buffer rstd1 = plan_.alloc("rstd1", {st.T}, DType::F32, MemCategory::TransientActivations);
    be_.rmsnorm_forward(x, *w.in_norm, eps, n1, rstd1);
    rstd1.release();
    // With sequence parallelism the attention reads q, k, v in the head layout (below): these are transient.
    const MemCategory qkv_cat = st.sp ? MemCategory::TransientActivations : cat;
    s.q = plan_.alloc("q", {st.T, st.qd}, act_, qkv_cat);
    s.k = plan_.alloc("k", {st.T, st.kvd}, act_, qkv_cat);
    s.v = plan_.alloc("v", {st.T, st.kvd}, act_, qkv_cat);
    if (config_.qk_norm) {  // Qwen3: q = q_norm(q_proj(n1)) per head [T·H, D], k likewise, then RoPE
      s.q_raw = plan_.alloc("q_raw", {st.T, st.qd}, act_, cat);
      s.k_raw = plan_.alloc("k_raw", {st.T, st.kvd}, act_, cat);
      s.rstd_q = plan_.alloc("rstd_q", {st.T * H}, DType::F32, cat);
      s.rstd_k = plan_.alloc("rstd_k", {st.T * Hkv}, DType::F32, cat);
      proj_forward(w.q, n1, s.q_raw);
      proj_forward(w.k, n1, s.k_raw);
      be_.rmsnorm_forward(s.q_raw->view({st.T * H, D}), *w.q_norm, eps, s.q->view({st.T * H, D}), s.rstd_q);
      be_.rmsnorm_forward(s.k_raw->view({st.T * Hkv, D}), *w.k_norm, eps, s.k->view({st.T * Hkv, D}),
                          s.rstd_k);
      if (!for_backward) s.q_raw.release(), s.k_raw.release(), s.rstd_q.release(), s.rstd_k.release();
    } else {
      proj_forward(w.q, n1, s.q);
      proj_forward(w.k, n1, s.k);
    }
    proj_forward(w.v, n1, s.v);
  }
  be_.rope_forward(s.q->view({st.B, st.S, H, D}), st.positions.data(), st.rope);
  be_.rope_forward(s.k->view({st.B, st.S, Hkv, D}), st.positions.data(), st.rope);
  if (st.sp) {  // sequence shards → head shards: [T, H·D] → [B·S_attn, Hl·D] (k, v likewise)
    HeadExchange xq(be_, plan_, *st.sp, st.B, st.S, H, D), xkv(be_, plan_, *st.sp, st.B, st.S, Hkv, D);
    const int64_t rows = st.B * st.S_attn;
    // Each token-layout tensor is freed once packed, before its head-layout twin exists.
    auto exchange = [&](HeadExchange& x, Buffer& t, const char* name, int64_t heads) {
      Buffer send = x.pack(t);
      t.release();
      t = plan_.alloc(name, {rows, heads * D}, act_, cat);
      x.to_heads(std::move(send), t);
    };
    exchange(xq, s.q, "q_heads", st.Hl);
    exchange(xkv, s.k, "k_heads", st.Hkvl);
    exchange(xkv, s.v, "v_heads", st.Hkvl);
  }
  // Attention's layout: [B, S_attn, Hl, D] (the token layout [B, S, H, D] without sequence parallelism).
  const Tensor q4 = s.q->view({st.B, st.S_attn, st.sp ? st.Hl : H, D});
  const Tensor k4 = s.k->view({st.B, st.S_attn, st.sp ? st.Hkvl : Hkv, D});
  const Tensor v4 = s.v->view({st.B, st.S_attn, st.sp ? st.Hkvl : Hkv, D});
  if (!st.sp) s.attn = plan_.alloc("attn", {st.T, st.qd}, act_, cat);
  s.lse = plan_.alloc("lse", {st.B, st.sp ? st.Hl : H, st.S_attn}, DType::F32, cat);
  AttentionParams ap = attention_params(st, l);
  if (st.kv) {  // decoding: the queries are the newest positions of the cached keys
    const auto [kc, vc] = append_kv(*st.kv, l, s.k, s.v);
    ap.q_offset = kc.size(1) - st.S;
    be_.attention_forward(q4, kc, vc, s.attn->view({st.B, st.S, H, D}), s.lse, ap);
  } else if (st.sp) {  // head shards → sequence shards for the output projection
    s.attn_heads = plan_.alloc("attn_heads", {st.B * st.S_attn, st.Hl * D}, act_, cat);
    be_.attention_forward(q4, k4, v4, s.attn_heads->view({st.B, st.S_attn, st.Hl, D}), s.lse, ap);
    if (!for_backward) s.q.release(), s.k.release(), s.v.release(), s.lse.release();
    s.attn = plan_.alloc("attn", {st.T, st.qd}, act_, cat);
    HeadExchange(be_, plan_, *st.sp, st.B, st.S, H, D).to_sequence(s.attn_heads, s.attn);
    if (!for_backward) s.attn_heads.release();
  } else {
    be_.attention_forward(q4, k4, v4, s.attn->view({st.B, st.S, H, D}), s.lse, ap);
  }
  if (!for_backward) s.q.release(), s.k.release(), s.v.release(), s.lse.release();
  {
    Buffer o = plan_.alloc("o", {st.T, st.d}, act_, MemCategory::TransientActivations);  // [T, d]
    proj_forward(w.o, s.attn, o);
    if (!for_backward) s.attn.release();
    be_.add_inplace(x, o);
  }
  // x is now h, the residual after attention, which the MLP backward reads (its norm is recomputed per chunk
  // from it). A recomputation stops here and the caller keeps x as h; a forward that goes on keeps a copy
  // when needed.
  if (for_backward) s.rstd2 = plan_.alloc("rstd2", {st.T}, DType::F32, cat);
  if (finish && for_backward) {
    s.h = plan_.alloc("h", {st.T, st.d}, act_, cat);
    be_.copy(s.h, x);
  }

  // ---- MLP block: x = x + down(silu(gate(n2)) * up(n2)), n2 = norm(x), over chunks of C rows ----
  if (!st.policy.mini_sequence && for_backward) {
    s.gate = plan_.alloc("mlp.gate", {st.T, st.I}, act_, cat);
    s.up = plan_.alloc("mlp.up", {st.T, st.I}, act_, cat);
    s.act = plan_.alloc("mlp.act", {st.T, st.I}, act_, cat);
  }
  if (!finish) {
    if (!st.policy.mini_sequence) {  // recompute for backward: gate/up/act are needed, the output is not
      Buffer n2 = plan_.alloc("n2", {st.T, st.d}, act_, MemCategory::TransientActivations);
      be_.rmsnorm_forward(x, *w.post_norm, eps, n2, s.rstd2);
      proj_forward(w.gate, n2, s.gate);
      proj_forward(w.up, n2, s.up);
      be_.swiglu_forward(s.gate, s.up, s.act);
    }
    return;
  }
  for (int64_t r0 = 0; r0 < st.T; r0 += st.mlp_rows) {
    MemoryPlan::Phase phase(plan_, "MLP chunk " + std::to_string(r0 / st.mlp_rows));
    mlp_forward_chunk(st, l, x, s, for_backward ? &s.rstd2.tensor() : nullptr, r0,
                      std::min(st.mlp_rows, st.T - r0));
  }
}

void Decoder::layer_backward(const Step& st, int l, const Tensor& x_in, const Tensor& h, Saved& s,
                             const Tensor& dx, const LayerParams& g) {
  const LayerParams& w = w_layers_[static_cast<size_t>(l)];
  const int64_t H = config_.num_attention_heads, Hkv = config_.num_key_value_heads, D = config_.head_dim;
  const MemCategory tr = MemCategory::TransientActivations;
  const float eps = static_cast<float>(config_.rms_norm_eps);

  // ---- MLP backward, chunk by chunk: the chunk's norm output is recomputed from h, and the norm's backward
  // runs per chunk (rows are independent), so dx's rows become the gradient of h chunk by chunk ----
  for (int64_t r0 = 0; r0 < st.T; r0 += st.mlp_rows) {
    MemoryPlan::Phase phase(plan_, "MLP chunk " + std::to_string(r0 / st.mlp_rows));
    const int64_t C = std::min(st.mlp_rows, st.T - r0);
    const Tensor hc = h.rows(r0, C), dyc = dx.rows(r0, C), rstd2c = s.rstd2->rows(r0, C);
    Buffer n2c = plan_.alloc("n2", {C, st.d}, act_, tr);  // [C, d]
    be_.rmsnorm_forward(hc, *w.post_norm, eps, n2c, rstd2c);
    std::optional<Buffer> gate, up, act;
    Tensor gt, ut, at;              // [C, I]
    if (st.policy.mini_sequence) {  // recompute this chunk's intermediates from its input
      gate = plan_.alloc("mlp.gate", {C, st.I}, act_, tr);
      up = plan_.alloc("mlp.up", {C, st.I}, act_, tr);
      act = plan_.alloc("mlp.act", {C, st.I}, act_, tr);
      gt = *gate, ut = *up, at = *act;
      proj_forward(w.gate, n2c, gt);
      proj_forward(w.up, n2c, ut);
      be_.swiglu_forward(gt, ut, at);
    } else {
      gt = s.gate->rows(r0, C), ut = s.up->rows(r0, C), at = s.act->rows(r0, C);
    }
    Buffer dact = plan_.alloc("mlp.dact", {C, st.I}, act_, tr);  // [C, I]
    proj_backward(w.down, g.down, dyc, at, dact, /*dx_accum=*/false);
    be_.swiglu_backward(dact, gt, ut, /*dgate=*/gt, /*dup=*/ut);  // in place: gate/up become their grads
    dact.release();
    Buffer dn2c = plan_.alloc("dn2", {C, st.d}, act_, tr);  // [C, d]
    proj_backward(w.gate, g.gate, gt, n2c, dn2c, /*dx_accum=*/false);
    proj_backward(w.up, g.up, ut, n2c, dn2c, /*dx_accum=*/true);
    // dx += d(post_attention_layernorm)/dh on these rows: they become the gradient of h.
    be_.rmsnorm_backward(dn2c, hc, *w.post_norm, rstd2c, dyc, g.post_norm, /*dx_accum=*/true);
  }
  s.gate.release(), s.up.release(), s.act.release();
  s.rstd2.release(), s.h.release();

  // ---- attention backward ----
  Buffer dq, dk, dv;  // [T, qd], [T, kvd], [T, kvd]
  if (st.sp) {
    // Sequence parallelism: the output gradient goes to the head layout, attention's backward runs there, and
    // dq, dk, dv come back to this rank's tokens (the copies of replicated kv heads summed).
    HeadExchange xq(be_, plan_, *st.sp, st.B, st.S, H, D), xkv(be_, plan_, *st.sp, st.B, st.S, Hkv, D);
    const int64_t rows = st.B * st.S_attn;
    Buffer dq_h, dk_h, dv_h;
    {
      Buffer dattn_h;
      {
        Buffer dattn = plan_.alloc("dattn", {st.T, st.qd}, act_, tr);  // [T, qd]
        proj_backward(w.o, g.o, dx, s.attn, dattn, /*dx_accum=*/false);
        s.attn.release();
        Buffer send = xq.pack(dattn);
        dattn.release();
        dattn_h = plan_.alloc("dattn_heads", {rows, st.Hl * D}, act_, tr);
        xq.to_heads(std::move(send), dattn_h);
      }
      dq_h = plan_.alloc("dq_heads", {rows, st.Hl * D}, act_, tr);
      dk_h = plan_.alloc("dk_heads", {rows, st.Hkvl * D}, act_, tr);
      dv_h = plan_.alloc("dv_heads", {rows, st.Hkvl * D}, act_, tr);
      const Shape q4{st.B, st.S_attn, st.Hl, D}, k4{st.B, st.S_attn, st.Hkvl, D};
      be_.attention_backward(dattn_h->view(q4), s.q->view(q4), s.k->view(k4), s.v->view(k4),
                             s.attn_heads->view(q4), s.lse, dq_h->view(q4), dk_h->view(k4), dv_h->view(k4),
                             attention_params(st, l));
    }
    s.attn_heads.release(), s.lse.release(), s.q.release(), s.k.release(), s.v.release();
    dq = plan_.alloc("dq", {st.T, st.qd}, act_, tr);
    xq.to_sequence(dq_h, dq);
    dq_h.release();
    dk = plan_.alloc("dk", {st.T, st.kvd}, act_, tr);
    xkv.to_sequence(dk_h, dk);
    dk_h.release();
    dv = plan_.alloc("dv", {st.T, st.kvd}, act_, tr);
    xkv.to_sequence(dv_h, dv);
    dv_h.release();
  } else {
    dq = plan_.alloc("dq", {st.T, st.qd}, act_, tr);
    dk = plan_.alloc("dk", {st.T, st.kvd}, act_, tr);
    dv = plan_.alloc("dv", {st.T, st.kvd}, act_, tr);
    Buffer dattn = plan_.alloc("dattn", {st.T, st.qd}, act_, tr);  // [T, qd]
    proj_backward(w.o, g.o, dx, s.attn, dattn, /*dx_accum=*/false);
    const AttentionParams ap = attention_params(st, l);
    const Tensor q4 = s.q->view({st.B, st.S, H, D}), k4 = s.k->view({st.B, st.S, Hkv, D});
    const Tensor v4 = s.v->view({st.B, st.S, Hkv, D});
    be_.attention_backward(dattn->view({st.B, st.S, H, D}), q4, k4, v4, s.attn->view({st.B, st.S, H, D}),
                           s.lse, dq->view({st.B, st.S, H, D}), dk->view({st.B, st.S, Hkv, D}),
                           dv->view({st.B, st.S, Hkv, D}), ap);
  }
  s.attn.release(), s.lse.release(), s.q.release(), s.k.release(), s.v.release();
  be_.rope_backward(dq->view({st.B, st.S, H, D}), st.positions.data(), st.rope);
  be_.rope_backward(dk->view({st.B, st.S, Hkv, D}), st.positions.data(), st.rope);
  if (config_.qk_norm) {  // through the per-head norms: dq, dk become the projections' gradients
    Buffer dq_raw = plan_.alloc("dq_raw", {st.T, st.qd}, act_, tr);
    be_.rmsnorm_backward(dq->view({st.T * H, D}), s.q_raw->view({st.T * H, D}), *w.q_norm, s.rstd_q,
                         dq_raw->view({st.T * H, D}), g.q_norm, /*dx_accum=*/false);
    dq = std::move(dq_raw);
    Buffer dk_raw = plan_.alloc("dk_raw", {st.T, st.kvd}, act_, tr);
    be_.rmsnorm_backward(dk->view({st.T * Hkv, D}), s.k_raw->view({st.T * Hkv, D}), *w.k_norm, s.rstd_k,
                         dk_raw->view({st.T * Hkv, D}), g.k_norm, /*dx_accum=*/false);
    dk = std::move(dk_raw);
    s.q_raw.release(), s.k_raw.release(), s.rstd_q.release(), s.rstd_k.release();
  }
  // The input norm again (forward kept only the layer input), then its backward.
  Buffer n1 = plan_.alloc("n1", {st.T, st.d}, act_, tr);  // [T, d]
  Buffer rstd1 = plan_.alloc("rstd1", {st.T}, DType::F32, tr);
  be_.rmsnorm_forward(x_in, *w.in_norm, eps, n1, rstd1);
  Buffer dn1 = plan_.alloc("dn1", {st.T, st.d}, act_, tr);  // [T, d]
  proj_backward(w.q, g.q, dq, n1, dn1, /*dx_accum=*/false);
  proj_backward(w.k, g.k, dk, n1, dn1, /*dx_accum=*/true);
  proj_backward(w.v, g.v, dv, n1, dn1, /*dx_accum=*/true);
  dq.release(), dk.release(), dv.release(), n1.release();
  // dx += d(input_layernorm)/dx_in: dx becomes the gradient of the layer input.
  be_.rmsnorm_backward(dn1, x_in, *w.in_norm, rstd1, dx, g.in_norm, /*dx_accum=*/true);
}

double Decoder::head_forward_backward(const Step& st, const Tensor& x, const Tensor* g_norm,
                                      const Tensor* g_head) {
  MemoryPlan::Phase phase(plan_, "LM head");
  const Tensor& w_norm = weights_.get("model.norm.weight");
  const std::string head = config_.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  const Tensor& w_head = weights_.get(head);  // [V, d]
  const MemCategory tr = MemCategory::TransientActivations;
  const float eps = static_cast<float>(config_.rms_norm_eps);

  // Per chunk of rows (the norm is per row): final norm, logits -> loss and dlogits in place, then the LM
  // head's backward and the norm's, so neither the norm output nor its gradient exists for all T rows. The
  // chunk's rows of x are read from a copy and overwritten by their gradient: x becomes dx in its own buffer,
  // so the residual stream and its gradient never coexist whole (and the backward finds no hole where x was).
  const int64_t rows = st.policy.lm_head_chunk_rows(config_, st.T);
  double loss = 0.0;
  for (int64_t r0 = 0; r0 < st.T; r0 += rows) {
    MemoryPlan::Phase chunk(plan_, "chunk " + std::to_string(r0 / rows));
    const int64_t C = std::min(rows, st.T - r0);
    Buffer xc = plan_.alloc("final_input", {C, st.d}, act_, tr);  // [C, d]: x's rows, which dx overwrites
    be_.copy(xc, x.rows(r0, C));
    Buffer nf = plan_.alloc("final_norm", {C, st.d}, act_, tr);  // [C, d]
    Buffer rstd = plan_.alloc("final_rstd", {C}, DType::F32, tr);
    be_.rmsnorm_forward(xc, w_norm, eps, nf, rstd);
    Buffer logits = plan_.alloc("logits", {C, st.V}, act_, tr);  // [C, V], becomes dlogits in place
    be_.linear_forward(nf, w_head, nullptr, logits);
    loss += be_.cross_entropy_forward_backward(logits, st.targets.data() + r0, st.loss_scale);
    // dW_head += dlogitsᵀ · nf_c (once per chunk, exactly once overall); dnf_c = dlogits · W_head.
    Buffer dnf = plan_.alloc("dfinal_norm", {C, st.d}, act_, tr);  // [C, d]
    be_.linear_backward(logits, nf, w_head, dnf, g_head, nullptr, /*dx_accum=*/false);
    logits.release();
    be_.rmsnorm_backward(dnf, xc, w_norm, rstd, x.rows(r0, C), g_norm, /*dx_accum=*/false);
  }
  return loss;
}

double Decoder::forward_backward(const TokenBatch& batch, const StepPolicy& policy, int64_t loss_denominator,
                                 GradSink* sink) {
  MS_CHECK(storage_ == GradStorage::Persistent || sink || plan_.is_dry(),
           "internal: the optimizer in backward needs a gradient sink");
  MS_CHECK(static_cast<int64_t>(batch.input_ids.size()) == batch.rows() &&
               static_cast<int64_t>(batch.labels.size()) == batch.rows(),
           "internal: token batch of inconsistent size");
  MS_CHECK(storage_ != GradStorage::None, "internal: this decoder was made for inference (no gradients)");
  Step st = make_step(batch.batch, batch.seq, policy, /*training=*/true);
  st.targets = batch.shifted_targets();
  st.ids = batch.input_ids.data();
  if (st.sp) {  // this rank's tokens of each sequence, and their targets (the shift is the global one)
    const int64_t first = st.sp->rank * st.S;
    std::vector<int32_t> targets(static_cast<size_t>(st.T));
    st.local_ids.resize(static_cast<size_t>(st.T));
    for (int64_t b = 0; b < st.B; ++b)
      for (int64_t s = 0; s < st.S; ++s) {
        const auto from = static_cast<size_t>(b * batch.seq + first + s),
                   to = static_cast<size_t>(b * st.S + s);
        st.local_ids[to] = batch.input_ids[from];
        targets[to] = st.targets[from];
      }
    st.targets = std::move(targets);
    st.ids = st.local_ids.data();
  }
  st.loss_scale = loss_denominator > 0 ? 1.0f / static_cast<float>(loss_denominator) : 0.0f;
  const int L = static_cast<int>(config_.num_hidden_layers);
  const ScratchLease scratch(be_, plan_,
                             scratch_shape(st, policy.lm_head_chunk_rows(config_, st.T), /*backward=*/true));

  // ---- forward ----
  Buffer x = plan_.alloc("residual", {st.T, st.d}, act_, MemCategory::ResidentActivations);  // [T, d]
  be_.embedding_forward(st.ids, weights_.get("model.embed_tokens.weight"), x);
  std::vector<Buffer> ckpt;  // [L] × [T, d]: each layer's input
  std::vector<Saved> saved(policy.checkpointing ? 0 : static_cast<size_t>(L));
  // Offloaded inputs leave through a device stage [T, d]: copied there (device speed), then downloaded on the
  // copy stream while the layer computes; the next layer reuses the stage once that download is done.
  std::optional<Buffer> stage;
  uint64_t staged = 0;  // ticket of the download reading the stage
  for (int l = 0; l < L; ++l) {
    MemoryPlan::Phase phase(plan_, "layer " + std::to_string(l) + " forward");
    const bool off = policy.checkpointing && l < offload_layers_;  // this layer's input goes to host memory
    ckpt.push_back(
        (off ? *host_ : plan_)
            .alloc("layer_input." + std::to_string(l), {st.T, st.d}, act_, MemCategory::ResidentActivations));
    if (off) {
      if (!stage) stage = plan_.alloc("offload_stage", {st.T, st.d}, act_, MemCategory::TransientActivations);
      be_.wait_copy(staged);
      be_.copy(*stage, x);
      staged = be_.download_async(ckpt.back(), *stage);
    } else {
      be_.copy(ckpt.back(), x);
    }
    if (stage && l + 1 >= offload_layers_) {  // the last offloaded input: free the stage once it has left
      be_.wait_copy(staged);
      stage.reset();
    }
    Saved transient;
    layer_forward(st, l, x, policy.checkpointing ? transient : saved[static_cast<size_t>(l)],
                  /*finish=*/true);
  }

  // ---- head: loss and the gradient of the last layer's output ----
  const bool per_group = storage_ == GradStorage::PerGroup;
  const std::vector<ParamSpec> trained = trainable_specs(config_, lora_);
  std::vector<ParamSpec> head_specs, embed_specs;
  for (const auto& sp : trained) {
    if (sp.role == ParamRole::FinalNorm || sp.role == ParamRole::LmHead) head_specs.push_back(sp);
    if (sp.role == ParamRole::Embedding) embed_specs.push_back(sp);
  }
  const bool embed_trained = !embed_specs.empty();
  // Per group: the embedding's gradient lives through the whole backward when it is tied to the LM head.
  std::optional<ParamSet> embed_grads, head_grads;
  if (per_group && config_.tie_word_embeddings && embed_trained)
    embed_grads.emplace(group_grads(embed_specs));
  if (per_group) head_grads.emplace(group_grads(head_specs));
  const bool tied = config_.tie_word_embeddings;
  // A handed-over group is freed at once, or (asynchronous reads) when the next one is handed over.
  std::optional<ParamSet> retiring;
  uint64_t retiring_reads = 0;
  auto free_retiring = [&] {
    if (!retiring) return;
    be_.wait_copy(retiring_reads);
    retiring.reset();
  };
  auto retire = [&](std::optional<ParamSet>& group) {
    if (group->size() == 0) {  // nothing trained in this group (LoRA): nothing to hand over
      group.reset();
      return;
    }
    const uint64_t reads = hand_over(sink, *group);
    free_retiring();
    if (async_grad_reads_) retiring = std::move(group), retiring_reads = reads;
    group.reset();
  };
  const ParamSet& head_set = per_group ? *head_grads : *grads_;
  const Tensor* g_norm = head_set.find("model.norm.weight");  // null when frozen (LoRA)
  const Tensor* g_head = !tied ? head_set.find("lm_head.weight")
                         : !embed_trained
                             ? nullptr
                             : (per_group ? *embed_grads : *grads_).find("model.embed_tokens.weight");
  const double loss = head_forward_backward(st, x, g_norm, g_head);
  Buffer dx = std::move(x);  // [T, d]: the residual stream's gradient, in the residual's buffer
  if (per_group) retire(head_grads);

  // ---- backward ----
  // Offloaded inputs come back one layer ahead: layer l-1's upload runs on the copy stream during layer l's
  // backward, into a second device buffer [T, d].
  std::optional<Buffer> fetched;
  uint64_t fetch_ticket = 0;
  auto prefetch = [&](int layer) {
    fetched = plan_.alloc("layer_input_upload", {st.T, st.d}, act_, MemCategory::TransientActivations);
    fetch_ticket = be_.upload_async(*fetched, ckpt[static_cast<size_t>(layer)]);
  };
  for (int l = L - 1; l >= 0; --l) {
    MemoryPlan::Phase phase(plan_, "layer " + std::to_string(l) + " backward");
    const Tensor& x_in = ckpt[static_cast<size_t>(l)];
    std::optional<Buffer> x_dev;  // an offloaded input, back on the device for the whole layer backward
    if (policy.checkpointing && l < offload_layers_) {
      if (!fetched) prefetch(l);  // the last layer, when every layer is offloaded
      be_.wait_copy(fetch_ticket);
      x_dev = std::move(fetched);
      fetched.reset();
    }
    if (policy.checkpointing && l >= 1 && l - 1 < offload_layers_) prefetch(l - 1);
    std::optional<ParamSet> layer_grads;
    if (per_group) {
      std::vector<ParamSpec> specs;
      for (const auto& sp : trained)
        if (sp.layer == l) specs.push_back(sp);
      layer_grads.emplace(group_grads(specs));
    }
    const LayerParams g = per_group ? layer_params(*layer_grads, l) : g_layers_[static_cast<size_t>(l)];
    if (policy.checkpointing) {
      Saved s;
      const Tensor& x_layer = x_dev ? x_dev->tensor() : x_in;
      {
        MemoryPlan::Phase re(plan_, "recompute");
        // The recomputation runs on a copy of the input, which becomes h (the residual after attention).
        s.h = plan_.alloc("h", {st.T, st.d}, act_, MemCategory::TransientActivations);
        be_.copy(s.h, x_layer);
        layer_forward(st, l, s.h, s, /*finish=*/false);
      }
      layer_backward(st, l, x_layer, s.h, s, dx, g);
    } else {
      Saved& s = saved[static_cast<size_t>(l)];
      layer_backward(st, l, x_in, s.h, s, dx, g);
      saved.pop_back();
    }
    ckpt.pop_back();
    if (per_group) retire(layer_grads);
  }
  if (embed_trained) {
    if (per_group && !embed_grads) embed_grads.emplace(group_grads(embed_specs));
    be_.embedding_backward(st.ids, dx, (per_group ? *embed_grads : *grads_).get("model.embed_tokens.weight"),
                           config_.embedding_padding_idx.value_or(-1));
    if (per_group) retire(embed_grads);
  }
  free_retiring();
  return loss;
}

}  // namespace miniseq
