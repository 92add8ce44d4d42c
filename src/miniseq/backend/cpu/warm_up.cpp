// OpenBLAS takes its GEMM packing buffers from a fixed per-thread pool and touches more of them for wider
// matrices. One wide GEMM in each layout the model uses touches the whole working part up front, so that RSS
// measurements of a step see only the memory plan.
#include <vector>

#include "miniseq/backend/cpu/cpu_backend.h"

namespace miniseq {

void CpuBackend::warm_up() {
  constexpr int64_t kT = 256, kIn = 1024, kOut = 32768;
  std::vector<float> x(kT * kIn, 0.0f), w(kOut * kIn, 0.0f), y(kT * kOut, 0.0f), dw(kOut * kIn, 0.0f);
  const Tensor tx(x.data(), {kT, kIn}), tw(w.data(), {kOut, kIn}), ty(y.data(), {kT, kOut}), tdw(dw.data(), {kOut, kIn});
  linear_forward(tx, tw, nullptr, ty);
  linear_backward(ty, tx, tw, tx, &tdw, nullptr, /*dx_accum=*/false);
  // The transposed layout: a wide input dimension.
  const Tensor tw2(w.data(), {kIn, kOut}), tx2(dw.data(), {kT, kOut}), ty2(y.data(), {kT, kIn});
  linear_forward(tx2, tw2, nullptr, ty2);
  linear_backward(ty2, tx2, tw2, tx2, &tw2, nullptr, /*dx_accum=*/false);
}

}  // namespace miniseq
