// How one training step spends memory: activation checkpointing and Mini-Sequence Transformer chunking.
#pragma once

#include <algorithm>
#include <cstdint>

#include "miniseq/io/model_config.h"

namespace miniseq {

// LongLoRA's sft_group_size (llama_attn_replace_sft.py): the S²-Attn group of supervised fine-tuning batches whose
// padded length is not a multiple of 4096.
constexpr int64_t kLongLoraSftGroup = 8192;

struct StepPolicy {
  bool mini_sequence = true;     // MsT: MLP and LM head + loss over chunks of rows
  bool checkpointing = true;     // keep each layer's input, recompute the layer in backward
  int64_t mlp_chunk_tokens = 0;  // rows per MLP chunk; 0 = hidden_size (the paper's C = d)
  int64_t lm_head_chunks = 0;    // chunks of the LM head; 0 = ceil(vocab / hidden) (the paper's M)
  // S²-Attn (LongLoRA's shifted sparse attention, --use_full_attn False) in training steps; evaluation, passkey and
  // generation always attend fully (Decoder::make_step). docs/s2attn.md.
  bool s2_attn = false;
  // LongLoRA's supervised-fine-tune.py (llama_attn_replace_sft.py): a batch whose padded length is not a multiple
  // of 4096 gets groups of this size instead of S/4 (its sft_group_size, 8192); 0 = always S/4 (fine-tune.py).
  int64_t s2_sft_group = 0;

  // S²-Attn group size for sequences of S tokens: LongLoRA's int(S · 1/4), at least 1. LongLoRA refuses an S that
  // is not a multiple of its group; here the last group (and the last shifted one) just holds fewer positions.
  static int64_t s2_group_size(int64_t S) { return std::max<int64_t>(1, S / 4); }
  // The group of a training step over sequences of S tokens (0 = full attention).
  int64_t s2_group(int64_t S) const {
    if (!s2_attn) return 0;
    return s2_sft_group > 0 && S % 4096 != 0 ? s2_sft_group : s2_group_size(S);
  }

  // Rows per MLP chunk for T rows (all of them without MsT or when T is smaller: no split).
  int64_t mlp_chunk_rows(const ModelConfig& c, int64_t T) const {
    if (!mini_sequence) return T;
    int64_t C = mlp_chunk_tokens > 0 ? mlp_chunk_tokens : c.hidden_size;
    return std::clamp<int64_t>(C, 1, T);
  }
  // Rows per LM-head chunk: ceil(T / M), the last chunk takes the remainder (no token is dropped). The default M is
  // the paper's ceil(V / d), which bounds a chunk's logits to about T × d values; but a chunk is never made smaller
  // than d rows by default: below that the logits are already smaller than one layer's hidden-state buffers, and
  // tiny GEMMs only cost time (at T = 512 on the 125M model, 12-row chunks made the step 30% slower).
  int64_t lm_head_chunk_rows(const ModelConfig& c, int64_t T) const {
    if (!mini_sequence) return T;
    if (lm_head_chunks > 0) {
      const int64_t M = std::clamp<int64_t>(lm_head_chunks, 1, T);
      return (T + M - 1) / M;
    }
    const int64_t M = std::clamp<int64_t>((c.vocab_size + c.hidden_size - 1) / c.hidden_size, 1, T);
    return std::min(T, std::max((T + M - 1) / M, c.hidden_size));
  }
};

}  // namespace miniseq
