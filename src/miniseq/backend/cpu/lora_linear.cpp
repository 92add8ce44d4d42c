// The LoRA linear on the CPU (ops/backend.h, LoraBranch): the base product as linear_forward /
// linear_backward, the branch as four skinny GEMMs with the scale folded into alpha and the accumulations
// into beta, so there is no extra pass over any tensor and no Bᵀ (lora_workspace_elems is 0). x, dx [T, in];
// y, dy [T, out]; W [out, in]; A, dA [r, in]; B, dB [out, r]; xa, dxa [T, r].
#include "miniseq/backend/cpu/cpu_backend.h"
#include "miniseq/backend/cpu/gemm.h"

namespace miniseq {

void CpuBackend::lora_linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias,
                                     const LoraBranch& l, const Tensor& y) {
  const int64_t in = w.size(1), out = w.size(0), T = x.numel() / in, r = l.a->size(0);
  MS_DASSERT(l.a->size(1) == in && l.b->size(0) == out && l.b->size(1) == r && l.xa.numel() == T * r);
  linear_forward(x, w, bias, y);
  if (T == 0) return;
  // xa [T, r] = s · x [T, in] · Aᵀ [in, r]
  cpu::gemm(math_, false, true, T, r, in, l.scale, x.f32(), in, l.a->f32(), in, 0.0f, l.xa.f32(), r);
  // y [T, out] += xa [T, r] · Bᵀ [r, out]
  cpu::gemm(math_, false, true, T, out, r, 1.0f, l.xa.f32(), r, l.b->f32(), r, 1.0f, y.f32(), out);
}

void CpuBackend::lora_linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dx,
                                      const Tensor* dw, const Tensor* db, const LoraBranch& l,
                                      bool dx_accum) {
  const int64_t in = w.size(1), out = w.size(0), T = x.numel() / in, r = l.a->size(0);
  MS_DASSERT(l.xa.numel() == T * r && l.dxa.numel() == T * r);
  linear_backward(dy, x, w, dx, dw, db, dx_accum);
  if (T == 0) return;
  // dxa [T, r] = s · dy [T, out] · B [out, r]
  cpu::gemm(math_, false, false, T, r, out, l.scale, dy.f32(), out, l.b->f32(), r, 0.0f, l.dxa.f32(), r);
  if (dx.data != nullptr && !dx.empty())  // dx [T, in] += dxa [T, r] · A [r, in]
    cpu::gemm(math_, false, false, T, in, r, 1.0f, l.dxa.f32(), r, l.a->f32(), in, 1.0f, dx.f32(), in);
  if (l.da) {  // dA [r, in] += dxaᵀ [r, T] · x [T, in]
    cpu::gemm(math_, true, false, r, in, T, 1.0f, l.dxa.f32(), r, x.f32(), in, 1.0f, l.da->f32(), in);
    store_grad(*l.da);
  }
  if (l.db) {
    // xa [T, r] = s · x · Aᵀ (recomputed), then dB [out, r] += dyᵀ [out, T] · xa [T, r]
    cpu::gemm(math_, false, true, T, r, in, l.scale, x.f32(), in, l.a->f32(), in, 0.0f, l.xa.f32(), r);
    cpu::gemm(math_, true, false, out, r, T, 1.0f, dy.f32(), out, l.xa.f32(), r, 1.0f, l.db->f32(), r);
    store_grad(*l.db);
  }
}

}  // namespace miniseq
