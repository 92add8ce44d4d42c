// RMSNorm as Hugging Face's LlamaRMSNorm in bf16 (fp32 statistics):
//   r = rsqrt(mean(x²) + eps);  n = bf16(x·r);  y = bf16(w·n)     (HF rounds n to the input dtype before w·n)
// x, y, dy, dx [T, d] (bf16); w [d] (bf16); dw [d] (fp32, accumulated); rstd [T] (fp32, saved for backward).
// Backward with g = dy·w:  dx = r·g − x·r³·mean(g·x);  dw += Σ_t dy·x·r  (per-block partials, then block
// order).
#include <algorithm>

#include "miniseq/backend/cuda/common.cuh"
#include "miniseq/backend/cuda/cuda_ops.h"

namespace miniseq::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBackwardBlocks = 512;  // fixed by T alone, so partial sums have a fixed order

template <typename TX, typename TW, typename TY>
__global__ void rmsnorm_forward_kernel(const TX* x, const TW* w, float eps, int64_t d, TY* y, float* rstd) {
  __shared__ float red[32];
  const int64_t t = blockIdx.x;
  const TX* xr = x + t * d;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    const float v = to_f32(xr[c]);
    ss += v * v;
  }
  ss = block_sum(ss, red);
  const float r = 1.0f / sqrtf(ss / static_cast<float>(d) + eps);
  if (threadIdx.x == 0) rstd[t] = r;
  TY* yr = y + t * d;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    const float n = to_f32(from_f32<TX>(to_f32(xr[c]) * r));
    yr[c] = from_f32<TY>(to_f32(w[c]) * n);
  }
}

template <typename TG, typename TX, typename TW, typename TD>
__global__ void rmsnorm_backward_kernel(const TG* dy, const TX* x, const TW* w, const float* rstd, int64_t T,
                                        int64_t d, TD* dx, bool accum, float* partials) {
  extern __shared__ float dw_part[];  // [d]: this block's Σ dy·x·r, each column owned by one thread
  __shared__ float red[32];
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) dw_part[c] = 0.0f;
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    const TG* g = dy + t * d;
    const TX* xr = x + t * d;
    const float r = rstd[t];
    float dot = 0.0f;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) dot += to_f32(g[c]) * to_f32(w[c]) * to_f32(xr[c]);
    dot = block_sum(dot, red);
    const float k = dot / static_cast<float>(d) * r * r * r;
    TD* out = dx + t * d;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      const float gc = to_f32(g[c]), xc = to_f32(xr[c]);
      float v = r * (gc * to_f32(w[c])) - k * xc;
      if (accum) v += to_f32(out[c]);
      out[c] = from_f32<TD>(v);
      dw_part[c] += gc * (xc * r);
    }
  }
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) partials[blockIdx.x * d + c] = dw_part[c];
}

}  // namespace

void CudaBackend::rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& y,
                                  const Tensor& rstd) {
  const int64_t d = x.size(-1), T = x.numel() / d;
  MS_DASSERT(w.numel() == d && y.numel() == x.numel() && rstd.numel() == T && rstd.dtype == DType::F32);
  if (T == 0) return;
  dispatch_dtype(x.dtype, "rmsnorm", [&](auto tx) {
    dispatch_dtype(w.dtype, "rmsnorm", [&](auto tw) {
      dispatch_dtype(y.dtype, "rmsnorm", [&](auto ty) {
        using TX = decltype(tx);
        using TW = decltype(tw);
        using TY = decltype(ty);
        rmsnorm_forward_kernel<<<static_cast<unsigned>(T), kThreads>>>(
            static_cast<const TX*>(x.data), static_cast<const TW*>(w.data), eps, d, static_cast<TY*>(y.data),
            static_cast<float*>(rstd.data));
      });
    });
  });
  MS_CUDA_LAUNCH_CHECK();
}

void CudaBackend::rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                                   const Tensor& dx, const Tensor* dw, bool dx_accum) {
  const int64_t d = x.size(-1), T = x.numel() / d;
  MS_DASSERT(dy.numel() == x.numel() && dx.numel() == x.numel() && w.numel() == d &&
             (!dw || dw->numel() == d));
  if (T == 0) return;
  const int64_t nblk = std::min<int64_t>(T, kMaxBackwardBlocks);
  const size_t smem = static_cast<size_t>(d) * sizeof(float);
  MS_CHECK(smem <= 48 * 1024, "CUDA rmsnorm: hidden size ", d, " above 12288 is not supported");
  auto* partials = static_cast<float*>(scratch(kPartials, static_cast<size_t>(nblk * d) * sizeof(float)));
  MS_CHECK(dy.dtype == x.dtype && w.dtype == x.dtype,
           "CUDA rmsnorm_backward: dy, x and w must share a dtype");
  dispatch_dtype(x.dtype, "rmsnorm", [&](auto tx) {
    dispatch_dtype(dx.dtype, "rmsnorm", [&](auto td) {
      using TX = decltype(tx);
      using TD = decltype(td);
      rmsnorm_backward_kernel<<<static_cast<unsigned>(nblk), kThreads, smem>>>(
          static_cast<const TX*>(dy.data), static_cast<const TX*>(x.data), static_cast<const TX*>(w.data),
          static_cast<const float*>(rstd.data), T, d, static_cast<TD*>(dx.data), dx_accum, partials);
    });
  });
  MS_CUDA_LAUNCH_CHECK();
  if (dw) column_sums_finish(partials, nblk, d, *dw);  // a frozen weight: its partials are left unused
}

}  // namespace miniseq::cuda
