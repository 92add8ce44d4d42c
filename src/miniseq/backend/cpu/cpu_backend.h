// The CPU backend: fp32 compute, OpenMP across rows/heads, OpenBLAS for GEMMs. One op family per file
// (embedding.cpp, rmsnorm.cpp, linear.cpp, rope.cpp, attention.cpp, swiglu.cpp, cross_entropy.cpp, adamw.cpp,
// elementwise.cpp), forward and backward side by side. Conventions: ops/backend.h.
// Math mode (gemm.h): fp32 (default), or bf16 (`--bf16 True`): the linear layers' three products (y, dx, dW)
// take bf16-rounded inputs with fp32 accumulation, as on the GPU; all else (attention, norms, softmax, loss,
// AdamW, weights, gradients) stays fp32. Memory policy (set_precision): bf16 weights / gradients are fp32 buffers
// rounded to bf16 at every store.
#pragma once

#include "miniseq/backend/cpu/gemm.h"
#include "miniseq/ops/backend.h"

namespace miniseq {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(cpu::Math math = cpu::Math::F32) : math_(math) {}
  cpu::Math math() const { return math_; }
  void set_math(cpu::Math math) { math_ = math; }

  Device device() const override { return Device::CPU; }
  void warm_up() override;  // warm_up.cpp
  // bf16 weights or gradients (memory policy) are emulated in fp32 buffers holding bf16 values (precision.cpp).
  DType weight_precision() const override { return weight_precision_; }
  DType grad_precision() const override { return grad_precision_; }
  void set_precision(DType weights, DType grads) override;
  void round_to_precision(const Tensor& t, DType precision) override;

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

  void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                  const AdamWParams& p, const Tensor* master) override;

 private:
  // The emulated bf16 store after an accumulation into a parameter gradient (linear dW/db, RMSNorm dw, embedding
  // dtable): rounds g to bf16 (nearest even) when grad_precision_ is BF16, as the CUDA kernels' bf16 stores do.
  void store_grad(const Tensor& g) const;

  cpu::Math math_;
  DType weight_precision_ = DType::F32, grad_precision_ = DType::F32;
};

// Sets the math mode of a CPU backend (fails for any other backend).
void set_cpu_math(Backend& backend, cpu::Math math);

}  // namespace miniseq
