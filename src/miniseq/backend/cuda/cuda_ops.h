// The CUDA backend class: bf16 parameters and activations, fp32 gradients, fp32 accumulation everywhere.
// One op family per file, forward and backward side by side: embedding.cu, rmsnorm.cu, linear.cu (cuBLASLt),
// rope.cu, attention.cu (+ attention_backward.cu), swiglu.cu, cross_entropy.cu, adamw.cu, elementwise.cu.
// Conventions: ops/backend.h. Everything runs on the legacy default stream, in issue order, except the
// asynchronous copies of offloaded activations (download_async/upload_async), which run on a copy stream
// ordered by events.
//
// Determinism: no reduction uses atomics. Reductions over rows (RMSNorm dw, bias grads, sums of squares)
// write per-block partials in a grid fixed by the shape and sum them in a fixed order; the embedding gradient
// groups equal token ids on the host and sums each group in position order; attention dK/dV are owned by one
// block per key tile (it loops over the query tiles), dQ by one block per query tile (it loops over the key
// tiles).
//
// Device memory: the per-call scratch of the ops (token ids, labels, per-row losses, reduction partials,
// attention's row terms, the RoPE table) comes from the memory plan when the decoder sets it (set_scratch,
// ops/scratch.h: the planner computes the same layout); without a planned buffer (op tests) each slot is a
// grow-only allocation of its own. Outside the plan: only the cuBLASLt workspace (64 MiB, allocated when the
// backend is made, so before a run reads the device's free memory). The fp32 master weights and the optimizer
// state are the optimizer's, in the plan (train/optimizer.h).
#pragma once

#include <cublasLt.h>

#include <array>
#include <map>
#include <mutex>
#include <vector>

#include "miniseq/ops/backend.h"

namespace miniseq::cuda {

class CudaBackend final : public Backend {
 public:
  CudaBackend();
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  Device device() const override { return Device::CUDA; }
  DType param_dtype() const override { return DType::BF16; }
  // fp32 gradients by default: parameter grads accumulate over MsT chunks and micro-batches; bf16 (8 significant
  // bits) drops contributions below 2^-9 of the running sum. See docs/cuda.md. bf16 with --grad_dtype bfloat16
  // (set_precision; every kernel that accumulates into a gradient dispatches on its dtype).
  DType grad_dtype() const override { return grads_; }
  // Weights are bf16 (with or without the optimizer's fp32 master); gradients F32 or BF16.
  void set_precision(DType weights, DType grads) override;
  DType activation_dtype() const override { return DType::BF16; }
  void warm_up() override;
  void upload(const Tensor& dst, const Tensor& host_src) override;
  void download(const Tensor& host_dst, const Tensor& src) override;
  size_t device_bytes_in_use() const override;
  size_t device_free_bytes() const override;
  void pin_host_memory(void* p, size_t bytes) override;
  void unpin_host_memory(void* p) override;
  uint64_t download_async(const Tensor& host_dst, const Tensor& src) override;  // transfer.cu
  uint64_t upload_async(const Tensor& dst, const Tensor& host_src) override;
  void wait_copy(uint64_t ticket) override;
  void sync_copy(uint64_t ticket) override;

  void embedding_forward(const int32_t* ids, const Tensor& table, const Tensor& out) override;
  void embedding_backward(const int32_t* ids, const Tensor& dout, const Tensor& dtable,
                          int64_t padding_idx) override;

  void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& y,
                       const Tensor& rstd) override;
  void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                        const Tensor& dx, const Tensor* dw, bool dx_accum) override;

  void linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) override;
  void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dx, const Tensor* dw,
                       const Tensor* db, bool dx_accum) override;
  int64_t lora_workspace_elems(int64_t, int64_t) const override { return 0; }
  void lora_linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const LoraBranch& l,
                           const Tensor& y) override;
  void lora_linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dx,
                            const Tensor* dw, const Tensor* db, const LoraBranch& l, bool dx_accum) override;

  void rope_forward(const Tensor& x, const int32_t* positions, const RopeParams& p) override;
  void rope_backward(const Tensor& dx, const int32_t* positions, const RopeParams& p) override;

  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                         const Tensor& lse, const AttentionParams& p) override;
  void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& out, const Tensor& lse, const Tensor& dq, const Tensor& dk,
                          const Tensor& dv, const AttentionParams& p) override;

  void swiglu_forward(const Tensor& gate, const Tensor& up, const Tensor& act) override;
  void swiglu_backward(const Tensor& dact, const Tensor& gate, const Tensor& up, const Tensor& dgate,
                       const Tensor& dup) override;

  double cross_entropy_forward_backward(const Tensor& logits, const int32_t* labels, float scale) override;
  CrossEntropyStats cross_entropy_forward(const Tensor& logits, const int32_t* labels) override;

  void add_inplace(const Tensor& y, const Tensor& x) override;
  void scale_inplace(const Tensor& y, float s) override;
  void fill_zero(const Tensor& y) override;
  void copy(const Tensor& dst, const Tensor& src) override;
  void copy_columns(const Tensor& dst, int64_t dst_col, const Tensor& src, int64_t src_col,
                    int64_t cols) override;
  double sum_squares(const Tensor& x) override;

  // param BF16 or F32, updated through `master` (fp32, the optimizer's, in the plan) when given, else in place
  // (bf16 with stochastic rounding without a master); grad F32 or BF16; m, v F32 or BF16.
  void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                  const AdamWParams& p, const Tensor* master) override;

  size_t scratch_bytes(const ScratchShape& shape) const override;
  void set_scratch(void* p, size_t bytes, const ScratchShape& shape) override;
  // Device bytes this backend holds outside the memory plan (the cuBLASLt workspace and unplanned scratch).
  size_t scratch_bytes() const;

 private:
  // The slots of ops/scratch.h, in its order.
  enum Slot {
    kIds = static_cast<int>(ScratchSlot::Ids),
    kLabels = static_cast<int>(ScratchSlot::Labels),
    kRowLoss = static_cast<int>(ScratchSlot::RowLoss),
    kRowArg = static_cast<int>(ScratchSlot::RowArg),
    kPartials = static_cast<int>(ScratchSlot::Partials),
    kRowTerms = static_cast<int>(ScratchSlot::RowTerms),
    kRopeTable = static_cast<int>(ScratchSlot::RopeTable),
    kCsr = static_cast<int>(ScratchSlot::Csr),
    kNumSlots = static_cast<int>(ScratchSlot::Count)
  };
  // A slot of the planned scratch (set_scratch) when one is set, checked against its planned size; else a
  // grow-only device allocation per slot (contents not preserved when it grows).
  void* scratch(Slot s, size_t bytes);
  // Copies n host int32 values into a scratch slot and returns the device pointer.
  int32_t* upload_ints(Slot s, const int32_t* host, int64_t n);
  // Device cos/sin table [S, D/2] x 2 for these positions and parameters (cached while they do not change).
  const float* rope_table(const int32_t* positions, int64_t S, int64_t D, const RopeParams& p);
  // C = alpha·op(A)·op(B) + beta·C in cuBLASLt's column-major terms (see linear.cu).
  void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const void* A, DType ta, int64_t lda,
            const void* B, DType tb, int64_t ldb, void* C, DType tc, int64_t ldc, float beta,
            const void* bias = nullptr, float alpha = 1.0f);
  // cudaMemcpyAsync on the copy stream after the work issued so far; returns the copy's ticket.
  uint64_t copy_async(void* dst, const void* src, size_t bytes, bool to_device);
  // Σ over rows of a [rows, cols] matrix product dy·(x·rstd) or of dy alone, into out[cols] (+=).
  void column_sums_finish(const float* partials, int64_t nblocks, int64_t cols, const Tensor& out);

  struct Buf {
    void* p = nullptr;
    size_t bytes = 0;
  };
  std::array<Buf, kNumSlots> slots_{};
  char* planned_scratch_ = nullptr;  // set_scratch's buffer, laid out as planned_layout_
  ScratchLayout planned_layout_;
  cublasLtHandle_t lt_ = nullptr;
  void* lt_workspace_ = nullptr;
  size_t lt_workspace_bytes_ = 0;
  DType grads_ = DType::F32;  // gradient storage (set_precision)
  // Asynchronous copies (offloaded activations): a non-blocking stream beside the legacy default stream, an
  // event marking "work issued so far" and a ring of completion events indexed by ticket.
  static constexpr uint64_t kCopyEvents = 16;
  // The main thread (offloaded activations) and the host optimizer's worker both issue copies.
  std::mutex copy_mu_;
  cudaStream_t copy_stream_ = nullptr;
  cudaEvent_t issued_ = nullptr;
  std::array<cudaEvent_t, kCopyEvents> copied_{};
  uint64_t copies_ = 0;  // tickets handed out (ticket 0 means "no copy")
  // RoPE table cache key
  std::vector<int32_t> rope_positions_;
  std::vector<float> rope_inv_freq_;  // [D/2] of the cached table
  float rope_scaling_ = 0;
};

}  // namespace miniseq::cuda
