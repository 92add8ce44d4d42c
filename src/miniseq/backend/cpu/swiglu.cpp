// SwiGLU activation of the MLP: act = silu(gate) · up, silu(g) = g·σ(g). gate, up, act [C, I].
#include <algorithm>

#include "miniseq/backend/cpu/cpu_backend.h"
#include "miniseq/backend/cpu/simd_math.h"

namespace miniseq {

namespace {
constexpr int64_t kBlock = 1024;  // elements per exp batch (stays in L1)
}

void CpuBackend::swiglu_forward(const Tensor& gate, const Tensor& up, const Tensor& act) {
  const int64_t n = gate.numel();
  MS_DASSERT(up.numel() == n && act.numel() == n);
  const float* g = gate.f32();
  const float* u = up.f32();
  float* a = act.f32();
  const int64_t nblocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t i0 = blk * kBlock, m = std::min(kBlock, n - i0);
    float e[kBlock];
    cpu::exp_affine_sum(g + i0, -1.0f, 0.0f, e, m);  // e = exp(−g)
#pragma omp simd
    for (int64_t i = 0; i < m; ++i) a[i0 + i] = g[i0 + i] / (1.0f + e[i]) * u[i0 + i];
  }
}

// σ = 1/(1+e^−g); dsilu/dg = σ·(1 + g·(1−σ)).  dgate = dact·up·dsilu,  dup = dact·silu(g).
// dgate/dup may alias gate/up: every element is read before it is written.
void CpuBackend::swiglu_backward(const Tensor& dact, const Tensor& gate, const Tensor& up,
                                 const Tensor& dgate, const Tensor& dup) {
  const int64_t n = gate.numel();
  MS_DASSERT(up.numel() == n && dact.numel() == n && dgate.numel() == n && dup.numel() == n);
  const float* da = dact.f32();
  const float* g = gate.f32();
  const float* u = up.f32();
  float* dg = dgate.f32();
  float* du = dup.f32();
  const int64_t nblocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t i0 = blk * kBlock, m = std::min(kBlock, n - i0);
    float e[kBlock];
    cpu::exp_affine_sum(g + i0, -1.0f, 0.0f, e, m);
#pragma omp simd
    for (int64_t i = 0; i < m; ++i) {
      const float gi = g[i0 + i], ui = u[i0 + i], di = da[i0 + i];
      const float sig = 1.0f / (1.0f + e[i]);
      const float silu = gi * sig;
      dg[i0 + i] = di * ui * (sig * (1.0f + gi * (1.0f - sig)));
      du[i0 + i] = di * silu;
    }
  }
}

}  // namespace miniseq
