// The decoder's inference half: forward only, for evaluation (loss and accuracy over a batch) and for decoding with
// a KV cache. Same layer code as training (layer_forward with finish = true); every activation is transient, so at
// most one layer's tensors exist at a time, and the LM head runs in the policy's chunks.
#include <algorithm>
#include <string>

#include "miniseq/model/decoder.h"
#include "miniseq/model/decoder_detail.h"
#include "miniseq/model/rope_scaling.h"

namespace miniseq {

KvCache::KvCache(const ModelConfig& config, MemoryPlan& plan, DType dtype, int64_t total, int64_t first_chunk)
    : total_(total) {
  MS_CHECK(total > 0 && first_chunk > 0, "internal: empty KV cache");
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    Layer layer;
    layer.window = config.sliding_window[static_cast<size_t>(l)];
    // A windowed layer compacts when full: room for two windows plus a chunk keeps the moved rows (the last
    // W − 1) from overlapping their destination.
    layer.capacity = layer.window > 0 ? std::min(total, 2 * layer.window + first_chunk) : total;
    const std::string p = "kv_cache." + std::to_string(l);
    layer.k = plan.alloc(p + ".k", {layer.capacity, config.kv_dim()}, dtype, MemCategory::ResidentActivations);
    layer.v = plan.alloc(p + ".v", {layer.capacity, config.kv_dim()}, dtype, MemCategory::ResidentActivations);
    layers_.push_back(std::move(layer));
  }
}

size_t KvCache::bytes() const {
  size_t b = 0;
  for (const auto& l : layers_) b += l.k->bytes() + l.v->bytes();
  return b;
}

std::pair<Tensor, Tensor> Decoder::append_kv(KvCache& cache, int l, const Tensor& k, const Tensor& v) {
  KvCache::Layer& c = cache.layers_[static_cast<size_t>(l)];
  const int64_t n = k.size(0), Hkv = config_.num_key_value_heads, D = config_.head_dim;
  if (c.len + n > c.capacity) {  // only windowed layers fill up (others hold `total` positions)
    const int64_t keep = c.window - 1;  // the oldest position the next query still sees is W − 1 back
    MS_CHECK(c.window > 0 && keep + n <= c.capacity && c.len - keep >= keep,
             "internal: KV cache of layer ", l, " cannot take ", n, " more positions");
    if (keep > 0) {
      be_.copy(c.k->rows(0, keep), c.k->rows(c.len - keep, keep));
      be_.copy(c.v->rows(0, keep), c.v->rows(c.len - keep, keep));
    }
    c.len = keep;
  }
  be_.copy(c.k->rows(c.len, n), k);
  be_.copy(c.v->rows(c.len, n), v);
  c.len += n;
  return {c.k->rows(0, c.len).view({1, c.len, Hkv, D}), c.v->rows(0, c.len).view({1, c.len, Hkv, D})};
}

CrossEntropyStats Decoder::forward_eval(const TokenBatch& batch, const StepPolicy& policy) {
  MS_CHECK(static_cast<int64_t>(batch.input_ids.size()) == batch.rows() &&
               static_cast<int64_t>(batch.labels.size()) == batch.rows(),
           "internal: token batch of inconsistent size");
  Step st = make_step(batch.batch, batch.seq, policy, /*training=*/false);
  st.saved_cat = MemCategory::TransientActivations;  // nothing outlives its layer
  st.targets = batch.shifted_targets();
  st.ids = batch.input_ids.data();
  const ScratchLease scratch(be_, plan_, scratch_shape(st, policy.lm_head_chunk_rows(config_, st.T), false));

  Buffer x = plan_.alloc("residual", {st.T, st.d}, act_, MemCategory::ResidentActivations);  // [T, d]
  be_.embedding_forward(st.ids, weights_.get("model.embed_tokens.weight"), x);
  for (int l = 0; l < config_.num_hidden_layers; ++l) {
    MemoryPlan::Phase phase(plan_, "layer " + std::to_string(l) + " forward");
    Saved s;
    layer_forward(st, l, x, s, /*finish=*/true);
  }

  MemoryPlan::Phase phase(plan_, "LM head");
  const Tensor& w_norm = weights_.get("model.norm.weight");
  const Tensor& w_head = weights_.get(config_.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
  const MemCategory tr = MemCategory::TransientActivations;
  const int64_t rows = policy.lm_head_chunk_rows(config_, st.T);
  CrossEntropyStats total;
  for (int64_t r0 = 0; r0 < st.T; r0 += rows) {
    MemoryPlan::Phase chunk(plan_, "chunk " + std::to_string(r0 / rows));
    const int64_t C = std::min(rows, st.T - r0);
    Buffer nf = plan_.alloc("final_norm", {C, st.d}, act_, tr);  // [C, d]
    Buffer rstd = plan_.alloc("final_rstd", {C}, DType::F32, tr);
    be_.rmsnorm_forward(x->rows(r0, C), w_norm, static_cast<float>(config_.rms_norm_eps), nf, rstd);
    Buffer logits = plan_.alloc("logits", {C, st.V}, act_, tr);  // [C, V]
    be_.linear_forward(nf, w_head, nullptr, logits);
    const CrossEntropyStats cs = be_.cross_entropy_forward(logits, st.targets.data() + r0);
    total.loss_sum += cs.loss_sum, total.counted += cs.counted, total.correct += cs.correct;
  }
  return total;
}

std::vector<float> Decoder::forward_cached(const std::vector<int32_t>& ids, KvCache& cache,
                                           const StepPolicy& policy) {
  const auto n = static_cast<int64_t>(ids.size());
  MS_CHECK(n > 0 && cache.pos_ + n <= cache.total_, "internal: the KV cache holds ", cache.total_,
           " positions; ", cache.pos_, " are used and ", n, " more were given");
  MS_CHECK(static_cast<int64_t>(cache.layers_.size()) == config_.num_hidden_layers,
           "internal: KV cache made for another model");
  for (int32_t id : ids)
    MS_CHECK(id >= 0 && id < config_.vocab_size, "token id ", id, " is outside the model's vocabulary [0, ",
             config_.vocab_size, ")");
  Step st = make_step(1, n, policy, /*training=*/false);
  for (int64_t s = 0; s < n; ++s) st.positions[static_cast<size_t>(s)] = static_cast<int32_t>(cache.pos_ + s);
  st.rope = rope_params(config_, cache.pos_ + n);  // dynamic NTK follows the longest position so far
  st.saved_cat = MemCategory::TransientActivations;
  st.ids = ids.data();
  st.kv = &cache;
  const ScratchLease scratch(be_, plan_, scratch_shape(st, /*loss_rows=*/0, /*backward=*/false));

  Buffer x = plan_.alloc("residual", {n, st.d}, act_, MemCategory::ResidentActivations);  // [n, d]
  be_.embedding_forward(st.ids, weights_.get("model.embed_tokens.weight"), x);
  for (int l = 0; l < config_.num_hidden_layers; ++l) {
    MemoryPlan::Phase phase(plan_, "layer " + std::to_string(l) + " forward");
    Saved s;
    layer_forward(st, l, x, s, /*finish=*/true);
  }
  cache.pos_ += n;

  // The next token's logits: final norm and LM head of the last position only.
  MemoryPlan::Phase phase(plan_, "LM head");
  const MemCategory tr = MemCategory::TransientActivations;
  Buffer nf = plan_.alloc("final_norm", {1, st.d}, act_, tr);
  Buffer rstd = plan_.alloc("final_rstd", {1}, DType::F32, tr);
  be_.rmsnorm_forward(x->rows(n - 1, 1), weights_.get("model.norm.weight"),
                      static_cast<float>(config_.rms_norm_eps), nf, rstd);
  Buffer logits = plan_.alloc("logits", {1, st.V}, act_, tr);  // [1, V]
  be_.linear_forward(nf, weights_.get(config_.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"),
                     nullptr, logits);
  std::vector<float> out(static_cast<size_t>(st.V));
  be_.download(Tensor(out.data(), {1, st.V}, DType::F32), logits);
  return out;
}

}  // namespace miniseq