// The LoRA linear's default implementation, composed of the backend's own ops (ops/backend.h): any backend
// runs LoRA with it. y = x·Wᵀ (+ b) + s·(x·Aᵀ)·Bᵀ; x [T, in], y [T, out], W [out, in], A [r, in], B [out, r].
//
// Backward, with u = s·x·Aᵀ [T, r] and g = s·dy·B [T, r]:
//   dx = dy·W + g·A      dW += dyᵀ·x (when wanted)      dA += gᵀ·x      dB += dyᵀ·u
// (y = x·Wᵀ + u·Bᵀ: dB = dyᵀ·u; du = dy·B, u = s·x·Aᵀ so dA = s·duᵀ·x and dx gets s·du·A.)
#include <vector>

#include "miniseq/ops/backend.h"

namespace miniseq {

void Backend::lora_linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const LoraBranch& l,
                                  const Tensor& y) {
  const int64_t out = w.size(0), r = l.a->size(0);
  linear_forward(x, w, bias, y);
  linear_forward(x, *l.a, nullptr, l.xa);  // xa [T, r] = x·Aᵀ
  scale_inplace(l.xa, l.scale);
  // y += xa·Bᵀ is linear_backward's input-gradient product (dx += dy·W) with W = Bᵀ [r, out]; the ops have no
  // transpose, so Bᵀ is made on the host (r·out values) into the workspace.
  MS_CHECK(l.work.numel() >= r * out, "internal: LoRA workspace of ", l.work.numel(), " elements, need ",
           r * out);
  const Tensor bt = Tensor(l.work.data, {r * out}, l.work.dtype, l.work.device).view({r, out});
  if (bt.data) {
    std::vector<float> hb(static_cast<size_t>(out * r)), ht(static_cast<size_t>(r * out));
    download(Tensor(hb.data(), {out, r}), *l.b);
    for (int64_t o = 0; o < out; ++o)
      for (int64_t k = 0; k < r; ++k)
        ht[static_cast<size_t>(k * out + o)] = hb[static_cast<size_t>(o * r + k)];
    upload(bt, Tensor(ht.data(), {r, out}));
  }
  linear_backward(l.xa, /*x (unused without dw)=*/y, bt, y, nullptr, nullptr, /*dx_accum=*/true);
}

void Backend::lora_linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dx,
                                   const Tensor* dw, const Tensor* db, const LoraBranch& l, bool dx_accum) {
  linear_backward(dy, x, w, dx, dw, db, dx_accum);
  linear_forward(x, *l.a, nullptr, l.xa);  // recomputed: u = s·x·Aᵀ
  scale_inplace(l.xa, l.scale);
  linear_backward(dy, l.xa, *l.b, l.dxa, l.db, nullptr, /*dx_accum=*/false);  // dxa = dy·B; dB += dyᵀ·u
  scale_inplace(l.dxa, l.scale);
  linear_backward(l.dxa, x, *l.a, dx, l.da, nullptr, /*dx_accum=*/true);  // dx += g·A; dA += gᵀ·x
}

}  // namespace miniseq
