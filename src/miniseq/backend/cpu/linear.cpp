// Linear layers as nn.Linear: y = x·Wᵀ + b with W [out, in], all products through cpu::gemm (gemm.h):
// OpenBLAS sgemm in fp32 mode; bf16-rounded inputs with fp32 accumulation in bf16 mode (all three products,
// and the matrix-vector case of ≤ 2 rows too, so a row's result never depends on how many rows share the
// call). x, dx [T, in]; y, dy [T, out]; W, dW [out, in]; b, db [out].
#include <algorithm>

#include <cblas.h>

#include "miniseq/backend/cpu/cpu_backend.h"
#include "miniseq/backend/cpu/gemm.h"

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
  if (T <= kGemvRows && math_ == cpu::Math::F32) {  // decoding: a matrix-vector product per row reads W once
    for (int64_t t = 0; t < T; ++t)
      cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(out), static_cast<int>(in), 1.0f, w.f32(),
                  static_cast<int>(in), x.f32() + t * in, 1, beta, py + t * out, 1);
    return;
  }
  // y [T, out] = x [T, in] · Wᵀ [in, out] (+ b)
  cpu::gemm(math_, false, true, T, out, in, 1.0f, x.f32(), in, w.f32(), in, beta, py, out);
}

void CpuBackend::linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dx,
                                 const Tensor* dw, const Tensor* db, bool dx_accum) {
  const int64_t in = w.size(1), out = w.size(0), T = x.numel() / in;
  MS_DASSERT(dy.numel() == T * out);
  if (T == 0) return;
  // dx [T, in] = dy [T, out] · W [out, in]
  if (dx.data != nullptr && !dx.empty()) {  // a default Tensor() (null data) means: no input gradient
    MS_DASSERT(dx.numel() == T * in);
    cpu::gemm(math_, false, false, T, in, out, 1.0f, dy.f32(), out, w.f32(), in, dx_accum ? 1.0f : 0.0f,
              dx.f32(), in);
  }
  // dW [out, in] += dyᵀ [out, T] · x [T, in]
  if (dw) {
    MS_DASSERT(dw->numel() == out * in);
    cpu::gemm(math_, true, false, out, in, T, 1.0f, dy.f32(), out, x.f32(), in, 1.0f, dw->f32(), in);
    store_grad(*dw);
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
    store_grad(*db);
  }
}

}  // namespace miniseq
