// Linear layers as nn.Linear, y = x·Wᵀ + b with W [out, in], through cuBLASLt: bf16 inputs, fp32 compute.
// x, dx [T, in]; y, dy [T, out]; W [out, in] bf16; dW [out, in] fp32 (accumulated by the GEMM's beta = 1);
// b [out] bf16 (added in the GEMM epilogue before the output is rounded), db [out] fp32.
//
// cuBLASLt is column-major; a row-major [r, c] matrix is a column-major [c, r] one. So, in column-major
// terms:
//   y  [out, T] = Wᵀ [out, in] · x [in, T]         (A = W stored [in, out], transposed)
//   dx [in, T]  = W [in, out] · dy [out, T]
//   dW [in, out] += x [in, T] · dyᵀ [T, out]      (B = dy stored [out, T], transposed)
#include <algorithm>

#include "miniseq/backend/cuda/common.cuh"
#include "miniseq/backend/cuda/cuda_ops.h"

namespace miniseq::cuda {

namespace {

cudaDataType_t lt_type(DType t) {
  switch (t) {
    case DType::F32:
      return CUDA_R_32F;
    case DType::BF16:
      return CUDA_R_16BF;
    default:
      fail("CUDA linear: dtype ", dtype_name(t), " is not supported (F32 or BF16)");
  }
}

uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0) al /= 2;
  return al;
}

// RAII for the cuBLASLt descriptors of one call.
struct LtCall {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~LtCall() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// Block-partial column sums of dy [T, cols] for the bias gradient: partials [gridDim.y, cols]. Row blocks of
// kRowsPerBlock rows are dealt to the grid's y blocks in a grid-stride loop (any T, however many rows: no grid
// dimension limit), each y block summing its row blocks in order; the grid depends only on the shape, so the
// sums are deterministic.
constexpr int kColThreads = 256;
constexpr int64_t kRowsPerBlock = 256;
constexpr int64_t kMaxRowGroups = 1024;  // y blocks: partials [≤ 1024, cols]

__global__ void bias_grad_partials(const bf16* dy, int64_t T, int64_t cols, float* partials) {
  const int64_t c = blockIdx.x * int64_t(kColThreads) + threadIdx.x;
  if (c >= cols) return;
  float s = 0.0f;
  for (int64_t r0 = blockIdx.y * kRowsPerBlock; r0 < T; r0 += int64_t(gridDim.y) * kRowsPerBlock) {
    const int64_t r1 = min64(T, r0 + kRowsPerBlock);
    for (int64_t r = r0; r < r1; ++r) s += __bfloat162float(dy[r * cols + c]);
  }
  partials[blockIdx.y * cols + c] = s;
}

}  // namespace

void CudaBackend::gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const void* A, DType ta,
                       int64_t lda, const void* B, DType tb, int64_t ldb, void* C, DType tc, int64_t ldc,
                       float beta, const void* bias, float alpha) {
  LtCall call;
  MS_CUBLAS_CHECK(cublasLtMatmulDescCreate(&call.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t opa = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                          opb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  MS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(call.op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
  MS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(call.op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
  if (bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    MS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(call.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    MS_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(call.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    const cudaDataType_t bt = lt_type(tc);
    MS_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(call.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
  }
  // Stored shapes (rows × cols, column-major) before the op.
  MS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&call.a, lt_type(ta), trans_a ? k : m, trans_a ? m : k, lda));
  MS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&call.b, lt_type(tb), trans_b ? n : k, trans_b ? k : n, ldb));
  MS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&call.c, lt_type(tc), m, n, ldc));
  MS_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&call.pref));
  MS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(call.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                       &lt_workspace_bytes_, sizeof lt_workspace_bytes_));
  // The heuristic assumes 256-byte aligned pointers unless told: row chunks of the plan's buffers may be
  // less.
  const uint32_t al_a = alignment_of(A), al_b = alignment_of(B), al_c = alignment_of(C);
  MS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(call.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                       &al_a, sizeof al_a));
  MS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(call.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                       &al_b, sizeof al_b));
  MS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(call.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                       &al_c, sizeof al_c));
  MS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(call.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                       &al_c, sizeof al_c));
  // One rounding per output element (the error model of the CUDA op tests): split-K may only reduce its
  // partials in the fp32 compute type, never in the bf16 output type.
  const uint32_t reduction = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
  MS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(call.pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                       &reduction, sizeof reduction));
  cublasLtMatmulHeuristicResult_t heur{};
  int found = 0;
  MS_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt_, call.op, call.a, call.b, call.c, call.c, call.pref, 1,
                                                 &heur, &found));
  MS_CHECK(found > 0, "CUDA linear: cuBLASLt has no algorithm for m=", m, " n=", n, " k=", k, " (dtypes ",
           dtype_name(ta), "/", dtype_name(tb), "->", dtype_name(tc), ")");
  MS_CUBLAS_CHECK(cublasLtMatmul(lt_, call.op, &alpha, A, call.a, B, call.b, &beta, C, call.c, C, call.c,
                                 &heur.algo, lt_workspace_, lt_workspace_bytes_, /*stream=*/0));
  if (sync_after_launch()) MS_CUDA_CHECK(cudaDeviceSynchronize());  // MINISEQ_CUDA_SYNC=1 (common.cuh)
}

void CudaBackend::linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) {
  const int64_t in = w.size(1), out = w.size(0), T = x.numel() / in;
  MS_DASSERT(x.size(-1) == in && y.numel() == T * out);
  if (T == 0) return;
  MS_DASSERT(!bias || (bias->numel() == out && bias->dtype == y.dtype));
  gemm(/*trans_a=*/true, /*trans_b=*/false, out, T, in, w.data, w.dtype, in, x.data, x.dtype, in, y.data,
       y.dtype, out, /*beta=*/0.0f, bias ? bias->data : nullptr);
}

void CudaBackend::linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dx,
                                  const Tensor* dw, const Tensor* db, bool dx_accum) {
  const int64_t in = w.size(1), out = w.size(0), T = x.numel() / in;
  MS_DASSERT(dy.numel() == T * out);
  if (T == 0) return;
  if (dx.data != nullptr && !dx.empty()) {
    MS_DASSERT(dx.numel() == T * in);
    gemm(false, false, in, T, out, w.data, w.dtype, in, dy.data, dy.dtype, out, dx.data, dx.dtype, in,
         dx_accum ? 1.0f : 0.0f);
  }
  if (dw) {
    MS_DASSERT(dw->numel() == out * in);
    gemm(false, true, in, out, T, x.data, x.dtype, in, dy.data, dy.dtype, out, dw->data, dw->dtype, in,
         /*beta=*/1.0f);
  }
  if (db) {
    MS_DASSERT(db->numel() == out && dy.dtype == DType::BF16);
    const int64_t nblk = std::min((T + kRowsPerBlock - 1) / kRowsPerBlock, kMaxRowGroups);
    auto* partials = static_cast<float*>(scratch(kPartials, static_cast<size_t>(nblk * out) * sizeof(float)));
    const dim3 grid(static_cast<unsigned>((out + kColThreads - 1) / kColThreads),
                    static_cast<unsigned>(nblk));
    bias_grad_partials<<<grid, kColThreads>>>(static_cast<const bf16*>(dy.data), T, out, partials);
    MS_CUDA_LAUNCH_CHECK();
    column_sums_finish(partials, nblk, out, *db);
  }
}

}  // namespace miniseq::cuda
