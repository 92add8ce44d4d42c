// The LoRA linear on CUDA (ops/backend.h, LoraBranch): the base product through linear_forward /
// linear_backward, the branch as four skinny cuBLASLt GEMMs with the scale in alpha and the accumulations in
// beta (no Bᵀ workspace). Column-major mapping as in linear.cu; x, dx [T, in]; y, dy [T, out]; A, dA [r, in];
// B, dB [out, r]; xa, dxa [T, r] in the activation dtype; dA, dB in the gradient dtype.
#include "miniseq/backend/cuda/common.cuh"
#include "miniseq/backend/cuda/cuda_ops.h"

namespace miniseq::cuda {

void CudaBackend::lora_linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias,
                                      const LoraBranch& l, const Tensor& y) {
  const int64_t in = w.size(1), out = w.size(0), T = x.numel() / in, r = l.a->size(0);
  MS_DASSERT(l.a->size(1) == in && l.b->size(0) == out && l.xa.numel() == T * r);
  linear_forward(x, w, bias, y);
  if (T == 0) return;
  const Tensor &A = *l.a, &B = *l.b;
  // xa [T, r] = s·x·Aᵀ;  y [T, out] += xa·Bᵀ
  gemm(true, false, r, T, in, A.data, A.dtype, in, x.data, x.dtype, in, l.xa.data, l.xa.dtype, r, 0.0f,
       nullptr, l.scale);
  gemm(true, false, out, T, r, B.data, B.dtype, r, l.xa.data, l.xa.dtype, r, y.data, y.dtype, out, 1.0f);
}

void CudaBackend::lora_linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dx,
                                       const Tensor* dw, const Tensor* db, const LoraBranch& l,
                                       bool dx_accum) {
  const int64_t in = w.size(1), out = w.size(0), T = x.numel() / in, r = l.a->size(0);
  MS_DASSERT(l.xa.numel() == T * r && l.dxa.numel() == T * r);
  linear_backward(dy, x, w, dx, dw, db, dx_accum);
  if (T == 0) return;
  const Tensor &A = *l.a, &B = *l.b;
  // dxa [T, r] = s·dy·B
  gemm(false, false, r, T, out, B.data, B.dtype, r, dy.data, dy.dtype, out, l.dxa.data, l.dxa.dtype, r, 0.0f,
       nullptr, l.scale);
  if (dx.data != nullptr && !dx.empty())  // dx [T, in] += dxa·A
    gemm(false, false, in, T, r, A.data, A.dtype, in, l.dxa.data, l.dxa.dtype, r, dx.data, dx.dtype, in,
         1.0f);
  if (l.da)  // dA [r, in] += dxaᵀ·x
    gemm(false, true, in, r, T, x.data, x.dtype, in, l.dxa.data, l.dxa.dtype, r, l.da->data, l.da->dtype, in,
         1.0f);
  if (l.db) {  // xa [T, r] = s·x·Aᵀ (recomputed); dB [out, r] += dyᵀ·xa
    gemm(true, false, r, T, in, A.data, A.dtype, in, x.data, x.dtype, in, l.xa.data, l.xa.dtype, r, 0.0f,
         nullptr, l.scale);
    gemm(false, true, r, out, T, l.xa.data, l.xa.dtype, r, dy.data, dy.dtype, out, l.db->data, l.db->dtype, r,
         1.0f);
  }
}

}  // namespace miniseq::cuda
