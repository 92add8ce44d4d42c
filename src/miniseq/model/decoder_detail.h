// The decoder's per-call constants and saved tensors, shared by its training (decoder.cpp) and inference
// (decoder_infer.cpp) halves. Not part of the model's interface.
#pragma once

#include <vector>

#include "miniseq/model/decoder.h"

namespace miniseq {

struct Decoder::Step {
  int64_t B, S, T, d, qd, kvd, I, V;
  std::vector<int32_t> positions;  // [S]: 0 … S-1 (decoding: the absolute positions)
  RopeParams rope;                 // for positions < max(positions) + 1 (model/rope_scaling.h)
  std::vector<int32_t> targets;    // [T]: shifted labels
  const int32_t* ids;              // [T]
  StepPolicy policy;
  int64_t mlp_rows;       // C for the MLP
  MemCategory saved_cat;  // resident without checkpointing, transient with
  float loss_scale;       // 1 / loss_denominator
  KvCache* kv = nullptr;  // decoding: attention also sees the cached positions
  int64_t s2_group = 0;   // S²-Attn group (training with policy.s2_attn), 0 = full attention
  // Sequence parallelism (Decoder::set_sequence_parallel): S and T are this rank's tokens of each sequence;
  // attention runs over S_attn = S·P positions for heads [head_offset, head_offset + Hl) and Hkvl kv heads.
  // Without it S_attn = S and the heads are all the model's.
  const SequenceParallel* sp = nullptr;
  int64_t S_attn = 0, Hl = 0, Hkvl = 0, head_offset = 0;
  std::vector<int32_t> local_ids;  // [T]: this rank's tokens (sequence parallelism)
};

// The backend's per-call scratch (ops/scratch.h), a workspace buffer of the plan for as long as this lives
// (none on the CPU backend, which needs no scratch).
class ScratchLease {
 public:
  ScratchLease(Backend& be, MemoryPlan& plan, const ScratchShape& shape) : be_(be) {
    const size_t bytes = be.scratch_bytes(shape);
    if (bytes == 0) return;
    buf_ = plan.alloc("backend_scratch", {static_cast<int64_t>((bytes + 3) / 4)}, DType::F32,
                      MemCategory::Workspace);
    be_.set_scratch(buf_->data, bytes, shape);
    set_ = true;
  }
  ~ScratchLease() {
    if (set_) be_.set_scratch(nullptr, 0, {});
  }
  ScratchLease(const ScratchLease&) = delete;
  ScratchLease& operator=(const ScratchLease&) = delete;

 private:
  Backend& be_;
  Buffer buf_;
  bool set_ = false;
};

// The tensors a layer's backward reads. Buffers are released with the struct.
struct Decoder::Saved {
  Buffer q, k, v;         // [T, qd], [T, kvd], [T, kvd] after bias (and q/k norm) and RoPE
  Buffer q_raw, k_raw;    // [T, qd], [T, kvd] projections before the q/k norm (Qwen3 only)
  Buffer rstd_q, rstd_k;  // [T·H], [T·Hkv] 1/rms of each head (Qwen3 only)
  Buffer attn, lse;       // [T, qd], [B, H, S]
  // Sequence parallelism: q, k, v, and attn_heads are in the head layout, [B·S_attn, Hl·D] (k, v [B·S_attn,
  // Hkvl·D]): attention's inputs and output for this rank's heads; lse [B, Hl, S_attn]; attn stays [T, qd].
  Buffer attn_heads;
  // [T, d] residual after attention (with checkpointing: the recomputed input, which became it), [T] 1/rms of
  // the post-attention norm (its output is recomputed per MLP chunk). The input norm's output is recomputed
  // in backward.
  Buffer h, rstd2;
  Buffer gate, up, act;  // [T, I] each, only without MsT
};

}  // namespace miniseq
