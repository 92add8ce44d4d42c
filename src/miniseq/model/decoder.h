// The decoder-only transformer (Llama / Mistral / Qwen2) as a straight-line list of backend op calls: forward, and
// backward as its mirror. Memory comes from the plan; running with a dry plan and the DryBackend executes the same
// schedule without computing, which is how the peak is planned.
//
// Dimension legend: B batch, S sequence, T = B*S rows, d hidden, I intermediate, V vocab, H heads, Hkv kv heads,
// D head_dim, qd = H*D, kvd = Hkv*D, C chunk rows.
#pragma once

#include <cstdint>
#include <vector>

#include "miniseq/core/memory_plan.h"
#include "miniseq/model/batch.h"
#include "miniseq/model/params.h"
#include "miniseq/model/step_policy.h"
#include "miniseq/ops/backend.h"

namespace miniseq {

class Decoder {
 public:
  // Allocates the weights (Weights) and their gradients (Grads) in the backend's dtypes, uninitialized.
  Decoder(const ModelConfig& config, Backend& backend, MemoryPlan& plan);

  const ModelConfig& config() const { return config_; }
  const ParamSet& weights() const { return weights_; }
  const ParamSet& grads() const { return grads_; }
  void zero_grads();

  // One forward + backward over a micro-batch. Gradients ACCUMULATE into grads(); the loss of every target is
  // divided by `loss_denominator` (the count of targets != -100 in the whole optimizer step, as Hugging Face
  // normalizes). Returns the sum of the per-target losses of this micro-batch (not divided).
  double forward_backward(const TokenBatch& batch, const StepPolicy& policy, int64_t loss_denominator);

 private:
  // One layer's parameters (or their gradients), resolved once from the table.
  struct LayerParams {
    Tensor in_norm, q, k, v, o, post_norm, gate, up, down;  // HF shapes, see param_spec.h
    const Tensor *q_bias = nullptr, *k_bias = nullptr, *v_bias = nullptr, *o_bias = nullptr;
  };
  struct Saved;  // what a layer's backward needs from its forward (decoder.cpp)
  struct Step;   // per-call constants: sizes, positions, policy

  LayerParams layer_params(const ParamSet& set, int l) const;
  // x [T, d]: layer input on entry. With `finish`, x becomes the layer output; without, the forward stops after what
  // backward needs (the MLP output is not computed).
  void layer_forward(const Step& st, int l, const Tensor& x, Saved& s, bool finish);
  // dx [T, d]: gradient of the layer output on entry, of the layer input on return. x_in is the layer input.
  void layer_backward(const Step& st, int l, const Tensor& x_in, Saved& s, const Tensor& dx);
  void mlp_forward_chunk(const Step& st, int l, const Tensor& n2, const Tensor& x, Saved& s, int64_t r0, int64_t C);
  // Final norm + LM head + cross-entropy over chunks; writes dx [T, d] and returns the summed loss.
  double head_forward_backward(const Step& st, const Tensor& x, const Tensor& dx);

  ModelConfig config_;
  Backend& be_;
  MemoryPlan& plan_;
  DType act_;  // activation storage dtype (backend.activation_dtype())
  ParamSet weights_, grads_;
  std::vector<LayerParams> w_layers_, g_layers_;
};

}  // namespace miniseq
