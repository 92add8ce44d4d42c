// Linear layers as nn.Linear: y = x·Wᵀ + b with W [out, in], all products through OpenBLAS sgemm.
// x, dx [T, in]; y, dy [T, out]; W, dW [out, in]; b, db [out].
#include <algorithm>

#include <cblas.h>

#include "miniseq/backend/cpu/cpu_backend.h"

namespace miniseq {

namespace {
// Up to this many rows, y = x·Wᵀ runs as matrix-vector products: sgemm would pack all of W for a product that
// reads each weight once (one-token decoding spent a quarter of its time packing).
constexpr int64_t kGemvRows = 2;
}  // namespace

void CpuBackend::linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) {
  const int64_t in = w.size(1), out = w.size(0), T = x.numel() / in;
  MS_DASSERT(x.size(-1) == in && y.numel() == T * out);
  if (T == 0) return;
  float* py = y.f32();
  float beta = 0.0f;
  if (bias) {
    MS_DASSERT(bias->numel() == out);
    const float* b = bias->f32();
#pragma omp parallel for schedule(static) if (T * out > (1 << 15))
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < out; ++o) py[t * out + o] = b[o];
    beta = 1.0f;
  }
  if (T <= kGemvRows) {  // decoding: a matrix-vector product per row reads W once and packs nothing
    for (int64_t t = 0; t < T; ++t)
      cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(out), static_cast<int>(in), 1.0f, w.f32(),
                  static_cast<int>(in), x.f32() + t * in, 1, beta, py + t * out, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(T), static_cast<int>(out),
              static_cast<int>(in), 1.0f, x.f32(), static_cast<int>(in), w.f32(), static_cast<int>(in), beta,
              py, static_cast<int>(out));
}

void CpuBackend::linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dx,
                                 const Tensor* dw, const Tensor* db, bool dx_accum) {
  const int64_t in = w.size(1), out = w.size(0), T = x.numel() / in;
  MS_DASSERT(dy.numel() == T * out);
  if (T == 0) return;
  const int iT = static_cast<int>(T), iin = static_cast<int>(in), iout = static_cast<int>(out);
  // dx [T, in] = dy [T, out] · W [out, in]
  if (dx.data != nullptr && !dx.empty()) {  // a default Tensor() (null data) means: no input gradient
    MS_DASSERT(dx.numel() == T * in);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, iT, iin, iout, 1.0f, dy.f32(), iout, w.f32(), iin,
                dx_accum ? 1.0f : 0.0f, dx.f32(), iin);
  }
  // dW [out, in] += dyᵀ [out, T] · x [T, in]
  if (dw) {
    MS_DASSERT(dw->numel() == out * in);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, iout, iin, iT, 1.0f, dy.f32(), iout, x.f32(), iin,
                1.0f, dw->f32(), iin);
  }
  // db [out] += Σ_t dy[t]: threads split the columns in blocks (rows stream through contiguously, the order
  // over t is fixed, so the result does not depend on the thread count).
  if (db) {
    MS_DASSERT(db->numel() == out);
    const float* g = dy.f32();
    float* pdb = db->f32();
    constexpr int64_t kCols = 64;
    const int64_t nblocks = (out + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (T * out > (1 << 15))
    for (int64_t cb = 0; cb < nblocks; ++cb) {
      const int64_t c0 = cb * kCols, nc = std::min(kCols, out - c0);
      double acc[kCols] = {};
      for (int64_t t = 0; t < T; ++t) {
        const float* row = g + t * out + c0;
#pragma omp simd
        for (int64_t c = 0; c < nc; ++c) acc[c] += row[c];
      }
      for (int64_t c = 0; c < nc; ++c) pdb[c0 + c] += static_cast<float>(acc[c]);
    }
  }
}

}  // namespace miniseq
