// RMSNorm as Hugging Face's LlamaRMSNorm computes it in fp32:
//   variance = mean(x²);  n = x * rsqrt(variance + eps);  y = w * n   (two roundings: x·rstd, then w·n).
// x, y, dy, dx [T, d]; w, dw [d]; rstd [T] (saved for backward).
#include <cmath>
#include <vector>

#include <omp.h>

#include "miniseq/backend/cpu/cpu_backend.h"

namespace miniseq {

void CpuBackend::rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& y,
                                 const Tensor& rstd) {
  const int64_t d = x.size(-1), T = x.numel() / d;
  MS_DASSERT(w.numel() == d && y.numel() == x.numel() && rstd.numel() == T);
  const float* px = x.f32();
  const float* pw = w.f32();
  float* py = y.f32();
  float* pr = rstd.f32();
#pragma omp parallel for schedule(static) if (T * d > (1 << 14))
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = px + t * d;
    float* yr = py + t * d;
    double ss = 0.0;  // the sum of squares in double: within half an ulp of the fp32 mean HF gets
#pragma omp simd reduction(+ : ss)
    for (int64_t c = 0; c < d; ++c) ss += static_cast<double>(xr[c]) * xr[c];
    const float var = static_cast<float>(ss / static_cast<double>(d));
    const float r = 1.0f / std::sqrt(var + eps);
    pr[t] = r;
#pragma omp simd
    for (int64_t c = 0; c < d; ++c) yr[c] = pw[c] * (xr[c] * r);
  }
}

// With n = x·r, r = (mean(x²)+eps)^-½ and g = dy·w:
//   dx = r·g − x·r³·mean(g·x)      dw += Σ_t dy·n
void CpuBackend::rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                                  const Tensor& dx, const Tensor* dw, bool dx_accum) {
  const int64_t d = x.size(-1), T = x.numel() / d;
  MS_DASSERT(dy.numel() == x.numel() && dx.numel() == x.numel() && w.numel() == d &&
             (!dw || dw->numel() == d));
  const float* pdy = dy.f32();
  const float* px = x.f32();
  const float* pw = w.f32();
  const float* pr = rstd.f32();
  float* pdx = dx.f32();
  // Per-thread partials Σ_t dy·n, summed in thread order afterwards: the same bits on every run with the same
  // thread count (a critical section would add them in the order the threads finish).
  const bool parallel = T * d > (1 << 14);
  const int threads = parallel ? omp_get_max_threads() : 1;
  std::vector<float> partials(static_cast<size_t>(threads) * static_cast<size_t>(d), 0.0f);
#pragma omp parallel if (parallel) num_threads(threads)
  {
    float* dwl = partials.data() + static_cast<size_t>(omp_get_thread_num()) * static_cast<size_t>(d);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
      const float* g = pdy + t * d;
      const float* xr = px + t * d;
      float* out = pdx + t * d;
      const float r = pr[t];
      double dot = 0.0;
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < d; ++c) dot += static_cast<double>(g[c] * pw[c]) * xr[c];
      const float k = static_cast<float>(dot / static_cast<double>(d)) * r * r * r;
      if (dx_accum) {
#pragma omp simd
        for (int64_t c = 0; c < d; ++c) out[c] += r * (g[c] * pw[c]) - k * xr[c];
      } else {
#pragma omp simd
        for (int64_t c = 0; c < d; ++c) out[c] = r * (g[c] * pw[c]) - k * xr[c];
      }
      if (!dw) continue;
#pragma omp simd
      for (int64_t c = 0; c < d; ++c) dwl[c] += g[c] * (xr[c] * r);
    }
  }
  if (!dw) return;
  float* pdw = dw->f32();
  for (int64_t c = 0; c < d; ++c) {
    float total = 0.0f;
    for (int k = 0; k < threads; ++k) total += partials[static_cast<size_t>(k) * static_cast<size_t>(d) + c];
    pdw[c] += total;
  }
  store_grad(*dw);
}

}  // namespace miniseq
