// The decoder-only transformer (Llama / Mistral / Qwen2) as a straight-line list of backend op calls:
// forward, and backward as its mirror. Memory comes from the plan; running with a dry plan and the DryBackend
// executes the same schedule without computing, which is how the peak is planned.
//
// Dimension legend: B batch, S sequence, T = B*S rows, d hidden, I intermediate, V vocab, H heads, Hkv kv
// heads, D head_dim, qd = H*D, kvd = Hkv*D, C chunk rows.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "miniseq/core/memory_plan.h"
#include "miniseq/model/batch.h"
#include "miniseq/model/lora.h"
#include "miniseq/model/params.h"
#include "miniseq/model/sequence_parallel.h"
#include "miniseq/model/step_policy.h"
#include "miniseq/ops/backend.h"

namespace miniseq {

// Where parameter gradients live.
enum class GradStorage {
  Persistent,  // one buffer per parameter for the whole run (gradient accumulation, a separate optimizer
               // step)
  PerGroup,    // optimizer in backward: a group's gradients exist only from its backward until a GradSink has
               // consumed them (groups: LM head + final norm, each layer, the embedding)
  None,        // inference (evaluation, generation): weights only
};

// Keys and values of the positions seen so far, per layer, for decoding one sequence (batch 1). A layer with
// a sliding window W keeps only what its next queries can see: when its buffer is full, the last W − 1
// positions move to the front (decoder_infer.cpp).
class KvCache {
 public:
  // Room for `total` positions in all, of which up to `first_chunk` arrive in the first call.
  KvCache(const ModelConfig& config, MemoryPlan& plan, DType dtype, int64_t total, int64_t first_chunk);
  int64_t positions() const { return pos_; }  // positions run through the model so far
  size_t bytes() const;

 private:
  friend class Decoder;
  struct Layer {
    Buffer k, v;  // [capacity, kvd]: rows 0 … len-1 are the newest len positions, oldest first
    int64_t capacity = 0, len = 0, window = 0;
  };
  std::vector<Layer> layers_;
  int64_t pos_ = 0, total_ = 0;
};

// Receives gradients as soon as a group is complete (GradStorage::PerGroup). specs[i] names grads[i]. Returns
// the ticket of an asynchronous copy that still reads the gradients (Backend::download_async), 0 when none
// does.
class GradSink {
 public:
  virtual ~GradSink() = default;
  virtual uint64_t consume(const std::vector<const ParamSpec*>& specs, const std::vector<Tensor>& grads) = 0;
};

class Decoder {
 public:
  // Allocates the weights (Weights: the base model's and, with LoRA, the LoRA tensors, model_param_specs)
  // and, with persistent storage, the gradients of the trained ones (Grads: trainable_specs) in the backend's
  // dtypes, uninitialized. With `lora` enabled, the targeted linears run the LoRA branch
  // (Backend::lora_linear_forward) and frozen parameters get no gradient.
  Decoder(const ModelConfig& config, Backend& backend, MemoryPlan& plan,
          GradStorage storage = GradStorage::Persistent, const LoraConfig& lora = {});

  const ModelConfig& config() const { return config_; }
  const LoraConfig& lora() const { return lora_; }
  // Memory policy: the checkpointed inputs of layers [0, layers) live in `host` memory (a plan of its own,
  // pinned host memory on a GPU machine) instead of the device: downloaded in forward, uploaded again for the
  // layer's backward. layers < 0 means all. Results are unchanged (the same bits move).
  void set_checkpoint_offload(MemoryPlan* host, int64_t layers);
  // Per-group storage whose sink reads the gradients asynchronously (the host optimizer downloads them on the
  // copy stream): a handed-over group stays allocated until the next group has been handed over, then waits
  // for its copies and is freed, so the device never waits for a download. Costs one group (planned).
  void set_async_grad_reads(bool on) { async_grad_reads_ = on; }
  // Ulysses sequence parallelism (model/sequence_parallel.h) for forward_backward: every rank of the group
  // passes the same whole batch [B, S] (S divisible by P); this rank runs its S/P tokens of every sequence,
  // with the global positions, the global next-token shift and attention over the whole sequence for its
  // heads. The gradients are this rank's part: the caller sums them over the group (and the loss sums).
  // Training only.
  void set_sequence_parallel(const SequenceParallel& sp);
  const std::optional<SequenceParallel>& sequence_parallel() const { return sp_; }
  const ParamSet& weights() const { return weights_; }  // every parameter (frozen ones included)
  // The trained parameters' weights (a view of weights(), in grads()' order: trainable_specs): what AdamW
  // updates. All of weights() in full fine-tuning.
  const ParamSet& trained_weights() const { return trained_; }
  const ParamSet& grads() const;  // persistent storage only: the trained parameters (trainable_specs)
  void zero_grads();

  // One forward + backward over a micro-batch. With persistent storage gradients ACCUMULATE into grads();
  // with per-group storage each group's gradient is handed to `sink` as soon as it is complete and then
  // freed. The loss of every target is divided by `loss_denominator` (the count of targets != -100 in the
  // whole optimizer step, as Hugging Face normalizes). Returns the sum of the per-target losses of this
  // micro-batch (not divided).
  double forward_backward(const TokenBatch& batch, const StepPolicy& policy, int64_t loss_denominator,
                          GradSink* sink = nullptr);

  // ---- inference (decoder_infer.cpp): forward only, one layer's activations at a time ----
  // Loss, target count and argmax hits over the targets != -100 of a batch (labels unshifted, as in
  // training); the LM head runs in the policy's chunks, so the logits never exist for all rows at once.
  CrossEntropyStats forward_eval(const TokenBatch& batch, const StepPolicy& policy);
  // Runs `ids` [n] (the next n tokens of one sequence) through the model after the cache's positions, appends
  // their keys and values to it, and returns the logits of the last one [V] (fp32, host).
  std::vector<float> forward_cached(const std::vector<int32_t>& ids, KvCache& cache,
                                    const StepPolicy& policy);

 private:
  // One projection: its weight, bias and LoRA adapter, each null where absent (or, among gradients, frozen).
  struct Linear {
    const Tensor* w = nullptr;       // [out, in]
    const Tensor* bias = nullptr;    // [out]
    const Tensor* lora_a = nullptr;  // [r, in]
    const Tensor* lora_b = nullptr;  // [out, r]
  };
  // One layer's parameters (or their gradients: null where frozen), resolved once from the table.
  struct LayerParams {
    const Tensor *in_norm = nullptr, *post_norm = nullptr;  // [d] each
    const Tensor *q_norm = nullptr, *k_norm = nullptr;      // [D] each, Qwen3 only
    Linear q, k, v, o, gate, up, down;                      // HF shapes, see param_spec.h
  };
  struct Saved;  // what a layer's backward needs from its forward (decoder.cpp)
  struct Step;   // per-call constants: sizes, positions, policy
  // `training`: a forward_backward step, the only one where policy.s2_attn applies (inference attends fully).
  Step make_step(int64_t B, int64_t S, const StepPolicy& policy, bool training) const;
  // Layer l's attention (forward, recompute and backward alike): causal, its sliding window, the step's S²
  // group.
  AttentionParams attention_params(const Step& st, int l) const;
  // The sizes that bound a call's backend scratch (ops/scratch.h): loss_rows 0 without a loss.
  ScratchShape scratch_shape(const Step& st, int64_t loss_rows, bool backward) const;

  LayerParams layer_params(const ParamSet& set, int l) const;
  // y [rows, out] = x·Wᵀ (+ b), plus the LoRA branch when w has one (its [rows, r] workspace from the plan).
  void proj_forward(const Linear& w, const Tensor& x, const Tensor& y);
  // The matching backward: dx written (or accumulated), gradients into g's non-null tensors.
  void proj_backward(const Linear& w, const Linear& g, const Tensor& dy, const Tensor& x, const Tensor& dx,
                     bool dx_accum);
  // x [T, d]: layer input on entry. With `finish`, x becomes the layer output; without, the forward stops
  // after what backward needs (the MLP output is not computed).
  void layer_forward(const Step& st, int l, const Tensor& x, Saved& s, bool finish);
  // dx [T, d]: gradient of the layer output on entry, of the layer input on return. x_in is the layer input,
  // h [T, d] the residual after attention (s.h, or the recomputed input that became it); parameter gradients
  // accumulate into g.
  void layer_backward(const Step& st, int l, const Tensor& x_in, const Tensor& h, Saved& s, const Tensor& dx,
                      const LayerParams& g);
  // Decoding: makes room in layer l's cache for k, v [n, kvd], appends them, and returns the cached keys and
  // values [1, len, Hkv, D] (the new ones last).
  std::pair<Tensor, Tensor> append_kv(KvCache& cache, int l, const Tensor& k, const Tensor& v);
  // Rows [r0, r0 + C) of x += MLP(post_attention_layernorm(x)); the norm's 1/rms [T] goes to rstd2 when given
  // (a backward reads it), gate/up/act to s when kept whole (no MsT).
  void mlp_forward_chunk(const Step& st, int l, const Tensor& x, Saved& s, const Tensor* rstd2, int64_t r0,
                         int64_t C);
  // Final norm + LM head + cross-entropy over chunks; overwrites x [T, d] (the last layer's output) with its
  // gradient dx chunk by chunk, accumulates the final-norm and LM-head gradients, and returns the summed
  // loss. g_norm / g_head are null when frozen.
  double head_forward_backward(const Step& st, const Tensor& x, const Tensor* g_norm, const Tensor* g_head);
  // A group's gradients for per-group storage: zeroed buffers for `specs`.
  ParamSet group_grads(const std::vector<ParamSpec>& specs);
  uint64_t hand_over(GradSink* sink, const ParamSet& grads);  // the sink's copy ticket

  ModelConfig config_;
  Backend& be_;
  MemoryPlan& plan_;
  DType act_;  // activation storage dtype (backend.activation_dtype())
  GradStorage storage_;
  LoraConfig lora_;
  ParamSet weights_;
  ParamSet trained_;               // view of weights_
  std::optional<ParamSet> grads_;  // persistent storage
  std::vector<LayerParams> w_layers_, g_layers_;
  MemoryPlan* host_ = nullptr;  // checkpoint offload (set_checkpoint_offload)
  int64_t offload_layers_ = 0;
  bool async_grad_reads_ = false;
  std::optional<SequenceParallel> sp_;
};

}  // namespace miniseq
