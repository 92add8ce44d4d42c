// The op interface: every op family the model needs, declared once. The CPU backend (backend/cpu, fp32,
// OpenMP + OpenBLAS) is the tested specification; the CUDA backend (backend/cuda) implements the same
// signatures.
//
// Conventions (all backends):
//  - PyTorch dimension order, row-major contiguous tensors; linear layers are y = x·Wᵀ with W [out, in].
//  - Gradients: parameter grads ACCUMULATE (+=); activation grads are WRITTEN (=) unless the argument
//    is named `*_accum`; the residual-stream grad accumulates.
//  - Attention tensors stay in the projection layout: q [B, S, H, D], k and v [B, S, Hkv, D] (no transposes).
//  - Sizes are taken from the tensors; every op checks its shapes with debug asserts.
//
// Dimension legend: B batch, S sequence, T = B*S rows, d hidden, I intermediate, V vocab (or a vocab chunk),
// H heads, Hkv kv heads, D head_dim, C chunk rows.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "miniseq/core/tensor.h"
#include "miniseq/ops/scratch.h"

namespace miniseq {

struct AttentionParams {
  bool causal = true;
  int64_t sliding_window = 0;  // 0 = none; otherwise Hugging Face's Mistral convention (see the backends)
  float scale = 0.0f;          // softmax scale; 0 = 1/sqrt(D)
  // Forward only (KV-cache decoding): q holds Sq ≤ Sk newest positions, query row i sits at key row
  // i + q_offset (ops/attention_mask.h). Backward requires q_offset = 0 and Sq = Sk.
  int64_t q_offset = 0;
  // Sequence parallelism (model/sequence_parallel.h): q holds the query heads [head_offset, head_offset + H)
  // of a model with heads_total heads; S²-Attn shifts the global heads [heads_total/2, heads_total). 0, 0:
  // all heads.
  int64_t head_offset = 0;
  int64_t heads_total = 0;
  // S²-Attn group size G (training with --use_full_attn False): 0 = full attention. Heads [0, H/2) attend within
  // groups of G positions, heads [H/2, H) within groups shifted by G/2, with no group wrapping around
  // (ops/attention_mask.h, AttentionMask::for_head). Forward and backward take the same value.
  int64_t s2_group = 0;
};

// Loss-only cross-entropy of a chunk (evaluation): Σ loss and the count of rows whose argmax (first maximum,
// as torch.argmax) equals the label, over rows with a label != -100.
struct CrossEntropyStats {
  double loss_sum = 0.0;
  int64_t counted = 0;
  int64_t correct = 0;
};

// RoPE angles as transformers' rotary embedding: angle[s, i] = float(position[s]) · inv_freq[i] (one fp32 product),
// cos and sin of it (fp32) times attention_scaling (fp32). inv_freq comes from the model's rope scaling
// (model/rope_scaling.h: default, linear, dynamic, yarn, llama3); attention_scaling is yarn's, 1 otherwise.
struct RopeParams {
  std::vector<float> inv_freq;     // [D/2]
  float attention_scaling = 1.0f;
};

// Hyperparameters in double, as torch holds them (Python floats): torch derives 1 − β, 1 − lr·wd and the bias
// corrections in double and rounds only the results to fp32. From a float β2 = 0.999f, 1 − β2 would be off by
// 1e-5.
struct AdamWParams {
  double lr = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  int64_t step = 1;         // 1-based, for bias correction
  float grad_scale = 1.0f;  // multiplies the gradient first (global-norm clipping)
  // Weights kept in bf16 without a master copy (--master_weights False) receive the update by stochastic
  // rounding, element i with the bits sr::bits16(rounding_stream, i) (core/stochastic_rounding.h); the optimizer
  // derives the stream from (seed, step, parameter name).
  uint64_t rounding_stream = 0;
};

// The LoRA branch of one adapted linear (model/lora.h) for lora_linear_forward / lora_linear_backward: the
// adapter, its gradients, and workspaces from the memory plan.
struct LoraBranch {
  const Tensor* a = nullptr;  // A [r, in]
  const Tensor* b = nullptr;  // B [out, r]
  float scale = 1.0f;         // s = α / r
  Tensor xa;    // [T, r] workspace: holds s·x·Aᵀ afterwards (computed by forward and by backward)
  Tensor dxa;   // [T, r] workspace, backward only: holds s·dy·B afterwards
  Tensor work;  // [lora_workspace_elems(r, out)] workspace (none when that is 0)
  const Tensor* da = nullptr;  // backward: dA [r, in] += s·(dy·B)ᵀ·x   (null: no gradient wanted)
  const Tensor* db = nullptr;  // backward: dB [out, r] += s·dyᵀ·(x·Aᵀ)
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  // Storage dtypes of the training step on this backend: parameters, their gradients, and activations (the
  // residual stream, projections, MLP and logits chunks). Per-row statistics (rstd, lse) are always F32.
  // CPU: all F32 (the specification). CUDA: BF16 weights and activations with fp32 accumulation.
  virtual DType param_dtype() const { return DType::F32; }
  virtual DType grad_dtype() const { return DType::F32; }
  virtual DType activation_dtype() const { return DType::F32; }
  // The memory policy's precision of the trained state: the values of the weights (BF16 with --master_weights
  // False: no fp32 master, adamw_step rounds the update stochastically) and of the parameter gradients (BF16 with
  // --grad_dtype bfloat16: every accumulation into a gradient is rounded to bf16, nearest even). CUDA stores them
  // so (param_dtype(), grad_dtype() follow); the CPU emulates bf16 in its fp32 buffers, which then hold bf16 values
  // only (the same results as bf16 storage, at fp32's bytes). Defaults: the storage dtypes. set_precision fails for
  // a combination the backend cannot run (CUDA: weights F32).
  virtual DType weight_precision() const { return param_dtype(); }
  virtual DType grad_precision() const { return grad_dtype(); }
  virtual void set_precision(DType weights, DType grads);
  // Lets libraries allocate and touch their fixed per-thread workspaces (BLAS packing buffers) once, so that
  // they are part of the process baseline before memory is measured. No effect on results.
  virtual void warm_up() {}
  // Whole-tensor copies between host (CPU) tensors and this backend's tensors, converting dtypes: loading
  // weights, reading gradients and checkpoints back. The CPU backend copies in place.
  virtual void upload(const Tensor& dst, const Tensor& host_src) { copy(dst, host_src); }
  virtual void download(const Tensor& host_dst, const Tensor& src) { copy(host_dst, src); }
  // Page-locks host memory that upload/download will use often (offloaded state), for fast asynchronous
  // copies; nothing on the CPU backend. unpin before the memory is released.
  virtual void pin_host_memory(void* /*p*/, size_t /*bytes*/) {}
  virtual void unpin_host_memory(void* /*p*/) {}
  // Asynchronous whole-tensor copies for offloaded activations (same dtype on both sides; host memory
  // pinned). Each copy starts after all work issued so far (so it sees src complete and dst no longer in use)
  // and runs beside the work issued after it, on a copy stream; wait_copy(ticket) orders all work issued
  // afterwards after the copy, without blocking the host. Whoever frees or reuses either side must wait_copy
  // first. The CPU backend copies at once and returns ticket 0.
  virtual uint64_t download_async(const Tensor& host_dst, const Tensor& src) {
    download(host_dst, src);
    return 0;
  }
  virtual uint64_t upload_async(const Tensor& dst, const Tensor& host_src) {
    upload(dst, host_src);
    return 0;
  }
  virtual void wait_copy(uint64_t /*ticket*/) {}
  // Blocks the calling host thread until the copy is done (a host reader of a download). Thread-safe, as are
  // download_async and upload_async: the host optimizer's worker thread issues copies too.
  virtual void sync_copy(uint64_t /*ticket*/) {}
  // Bytes in use on the backend's device, for measured peaks (0 where the process RSS is the measure).
  virtual size_t device_bytes_in_use() const { return 0; }
  // Bytes the device can still allocate (cudaMemGetInfo's free), which a run's plan must fit; 0 when the device
  // is the host, whose available memory the caller reads itself.
  virtual size_t device_free_bytes() const { return 0; }
  // Per-call scratch from the memory plan (ops/scratch.h): the bytes this backend's ops need for a call of
  // `shape`, and the planned buffer to take them from until set_scratch(nullptr, 0, {}). Without one (op tests)
  // a backend allocates what it needs itself. The CPU backend needs none.
  virtual size_t scratch_bytes(const ScratchShape& /*shape*/) const { return 0; }
  virtual void set_scratch(void* /*p*/, size_t /*bytes*/, const ScratchShape& /*shape*/) {}

  // ---- embedding: ids [T] (int32), table [V, d] -> out [T, d] ----
  virtual void embedding_forward(const int32_t* ids, const Tensor& table, const Tensor& out) = 0;
  // dtable [V, d] += scatter of dout [T, d], except the positions whose id is padding_idx: they add nothing,
  // as in torch's nn.Embedding(padding_idx=…), which Hugging Face builds with config.pad_token_id. -1 = none.
  virtual void embedding_backward(const int32_t* ids, const Tensor& dout, const Tensor& dtable,
                                  int64_t padding_idx) = 0;

  // ---- RMSNorm (fp32 math as Hugging Face): y = x * rsqrt(mean(x²) + eps) * w; x, y [T, d], rstd [T] ----
  virtual void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& y,
                               const Tensor& rstd) = 0;
  // dx [T, d] written (or accumulated when dx_accum), dw [d] accumulated (when non-null: a frozen weight
  // passes null).
  virtual void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                                const Tensor& dx, const Tensor* dw, bool dx_accum) = 0;

  // ---- linear: y [T, out] = x [T, in] · W [out, in]ᵀ (+ b [out]) ----
  virtual void linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) = 0;
  // dx [T, in] = dy·W (+= when dx_accum; skipped when dx is a default Tensor() with no data), dW += dyᵀ·x
  // (when dw non-null), db += Σ_T dy (when db non-null)
  virtual void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dx,
                               const Tensor* dw, const Tensor* db, bool dx_accum) = 0;

  // ---- LoRA linear: y [T, out] = x [T, in]·W [out, in]ᵀ (+ b) + s·(x·Aᵀ)·Bᵀ, the branch in `l` ----
  // The default implementations compose the ops above (so every backend runs LoRA at once); Bᵀ for the
  // forward's accumulation then goes through the host into l.work. Backends with a GEMM that accumulates
  // x·Bᵀ override both and need no work (lora_workspace_elems 0). Recomputing xa in backward keeps no [T, r]
  // tensor alive between a layer's forward and its backward.
  virtual int64_t lora_workspace_elems(int64_t r, int64_t out) const { return r * out; }
  virtual void lora_linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const LoraBranch& l,
                                   const Tensor& y);
  // As linear_backward for the base (dx written or accumulated, dw/db when non-null: a frozen W passes
  // null), plus  dx += s·(dy·B)·A,  dA += s·(dy·B)ᵀ·x,  dB += s·dyᵀ·(x·Aᵀ)
  virtual void lora_linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dx,
                                    const Tensor* dw, const Tensor* db, const LoraBranch& l, bool dx_accum);

  // ---- RoPE, rotate_half convention, in place on x [B, S, Hx, D]; positions [S] (same for all rows);
  // p.inv_freq [D/2] ----
  virtual void rope_forward(const Tensor& x, const int32_t* positions, const RopeParams& p) = 0;
  // the inverse rotation applied to the gradient, in place
  virtual void rope_backward(const Tensor& dx, const int32_t* positions, const RopeParams& p) = 0;

  // ---- attention (flash-style, never stores S×S): q [B,S,H,D], k, v [B,S,Hkv,D] -> out [B,S,H,D], lse
  // [B,H,S] ---- (forward with p.q_offset: q, out [B,Sq,H,D], k, v [B,Sk,Hkv,D], lse [B,H,Sq])
  virtual void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                 const Tensor& lse, const AttentionParams& p) = 0;
  // dq written, dk and dv written (each kv head sums over its query group).
  virtual void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& out, const Tensor& lse, const Tensor& dq, const Tensor& dk,
                                  const Tensor& dv, const AttentionParams& p) = 0;

  // ---- SwiGLU: act [C, I] = silu(gate) * up ----
  virtual void swiglu_forward(const Tensor& gate, const Tensor& up, const Tensor& act) = 0;
  // dgate, dup [C, I] written from dact (may alias gate/up: computed element by element)
  virtual void swiglu_backward(const Tensor& dact, const Tensor& gate, const Tensor& up, const Tensor& dgate,
                               const Tensor& dup) = 0;

  // ---- cross-entropy on a chunk of logits [C, V], labels [C] (-100 = ignore) ----
  // Returns Σ loss over valid rows (fp64 accumulation); overwrites logits with dlogits = (softmax - onehot) *
  // scale for valid rows and 0 for ignored ones. scale is 1 / (valid labels in the whole batch).
  virtual double cross_entropy_forward_backward(const Tensor& logits, const int32_t* labels, float scale) = 0;
  // Loss and argmax accuracy only; logits [C, V] are left unchanged.
  virtual CrossEntropyStats cross_entropy_forward(const Tensor& logits, const int32_t* labels) = 0;

  // ---- elementwise and reductions ----
  virtual void add_inplace(const Tensor& y, const Tensor& x) = 0;  // y += x
  virtual void scale_inplace(const Tensor& y, float s) = 0;        // y *= s
  virtual void fill_zero(const Tensor& y) = 0;
  virtual void copy(const Tensor& dst, const Tensor& src) = 0;  // converts dtypes
  // A block of columns, row by row (sequence parallelism's head exchange, model/sequence_parallel.h): dst [R,
  // Nd] columns [dst_col, dst_col + cols) = src [R, Ns] columns [src_col, src_col + cols); same dtype. The
  // default copies row by row through copy(); the CPU and CUDA backends copy the strided block at once.
  virtual void copy_columns(const Tensor& dst, int64_t dst_col, const Tensor& src, int64_t src_col,
                            int64_t cols);
  virtual double sum_squares(const Tensor& x) = 0;              // for global grad norms
  // Rounds t's values to `precision` in place (nearest even): weights loaded into the CPU's fp32 buffers that
  // emulate bf16 (set_precision). Nothing to do where t is stored in `precision` already.
  virtual void round_to_precision(const Tensor& t, DType precision);

  // ---- optimizer: AdamW with decoupled weight decay and bias correction; m, v fp32 or bf16 (both the same)
  // ---- Without `master` the param is updated in place: fp32 exactly, bf16 values (stored, or emulated on the
  // CPU: weight_precision() BF16) with stochastic rounding. With `master` (fp32, the weights' exact values when the
  // param is stored in bf16) the update runs on master and param receives it rounded to nearest in its dtype.
  virtual void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                          const AdamWParams& p, const Tensor* master = nullptr) = 0;
};

// Backend factories. make_backend(Device::CUDA) fails with a clear error when CUDA was not built.
std::unique_ptr<Backend> make_cpu_backend();
std::unique_ptr<Backend> make_backend(Device device);

}  // namespace miniseq

namespace miniseq {
// Backends other than the CPU register themselves (the CUDA library does this from register_cuda_backend(),
// called by the program's entry point when built with CUDA).
using BackendFactory = std::unique_ptr<Backend> (*)();
void register_backend_factory(Device device, BackendFactory factory);
}  // namespace miniseq
