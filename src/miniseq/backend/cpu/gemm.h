// The CPU backend's GEMM entry point, in two math modes:
//   Math::F32   cblas_sgemm, exactly as before;
//   Math::BF16  mixed precision as on the GPU: both inputs rounded to bf16 (nearest even), products
//   accumulated
//               in fp32, C in fp32.
// The bf16 mode has two implementations with the same numbers up to summation order (bf16 × bf16 products are
// exact in fp32, so only the order of the fp32 additions differs):
//   oneDNN    the matmul primitive on bf16 operands (when built with oneDNN: the CMake option
//   MINISEQ_ONEDNN);
//             fast where the CPU has AVX512-BF16 or AMX-BF16, emulated (slower than sgemm) elsewhere;
//   fallback  portable: tiles of the inputs rounded into fp32 scratch, then sgemm per tile (no speed-up, the
//             same numbers).
// The path is chosen once per process: oneDNN when compiled in and the CPU has the feature, else the
// fallback; the environment variable MINISEQ_CPU_BF16_GEMM=onednn|fallback forces one (tests, benchmarks).
// Scratch is per call and bounded by the tile sizes (gemm.cpp), never a copy of a whole large operand.
#pragma once

#include <cstdint>
#include <string>

namespace miniseq::cpu {

enum class Math : uint8_t { F32, BF16 };
enum class Bf16Gemm : uint8_t { OneDnn, Fallback };

// C [M, N] = alpha · op(A) · op(B) + beta · C, row-major, the arguments of cblas_sgemm: op(A) [M, K] is A [M,
// K] (lda ≥ K) or, with trans_a, the transpose of A [K, M] (lda ≥ M); op(B) [K, N] is B [K, N] (ldb ≥ N) or,
// with trans_b, the transpose of B [N, K] (ldb ≥ K); ldc ≥ N.
void gemm(Math math, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// The bf16 product through one given implementation (tests). Bf16Gemm::OneDnn fails when not compiled in.
void gemm_bf16(Bf16Gemm path, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

bool onednn_compiled();
bool cpu_has_avx512_bf16();
bool cpu_has_amx_bf16();
// The implementation Math::BF16 uses in this process (chosen on first use; see above).
Bf16Gemm bf16_gemm_path();
// One line for the start of a run, e.g. "oneDNN (avx512_bf16)" or "portable fallback (no avx512_bf16 on this
// CPU: no speed-up)".
std::string bf16_gemm_description();

// x rounded to the nearest bf16 (ties to even), as an fp32 value.
float round_to_bf16(float x);

}  // namespace miniseq::cpu
