// GEMMs of the CPU backend in fp32 or bf16 mode (gemm.h). The bf16 product walks C in tiles of at most
// kTileM × kTileN, K in panels of at most kTileK; for each (K panel, row tile) the op(A) block is rounded
// once, for each column tile the op(B) block, into packed scratch, and the tile product (fp32 accumulation
// into C, beta only on the first K panel) runs through sgemm (fallback) or oneDNN's bf16 matmul. Scratch per
// call: (kTileM + kTileN) · kTileK elements at most (16 MiB as fp32, 8 MiB as bf16), sized to the balanced
// tiles actually used. Rounding costs (mc + nc)·kc conversions per 2·mc·nc·kc FLOP of the tile: ~0.1% of the
// work at full tiles.
#include "miniseq/backend/cpu/gemm.h"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <cblas.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "miniseq/backend/cpu/onednn_matmul.h"
#include "miniseq/core/check.h"
#include "miniseq/core/dtype.h"

namespace miniseq::cpu {

namespace {

constexpr int64_t kTileM = 2048, kTileN = 2048, kTileK = 1024;

// The size of ceil(n / cap) equal parts of n (so that no tile is a thin remainder).
int64_t balanced_tile(int64_t n, int64_t cap) {
  const int64_t parts = (n + cap - 1) / cap;
  return (n + parts - 1) / parts;
}

// The bits of f32_to_bf16(x) (nearest even; NaN stays a quiet NaN), written without a branch so that the
// rounding loops vectorize.
inline uint32_t bf16_bits(float x) {
  const uint32_t b = f32_to_bits(x);
  const uint32_t rounded = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
  const uint32_t nan = (b >> 16) | 0x0040u;
  return (b & 0x7fffffffu) > 0x7f800000u ? nan : rounded;
}
inline float to_bf16_value(float x) {
  return bits_to_f32(bf16_bits(x) << 16);
}

// dst [rows, cols] (packed) = src [rows, cols] (leading dimension ld) rounded to bf16, as fp32 (T = float) or
// as bf16 bits (T = uint16_t).
template <typename T>
void round_block(const float* src, int64_t ld, int64_t rows, int64_t cols, T* dst) {
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * ld;
    T* d = dst + r * cols;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) {
      if constexpr (std::is_same_v<T, float>) {
        d[c] = to_bf16_value(s[c]);
      } else {
        d[c] = static_cast<uint16_t>(bf16_bits(s[c]));
      }
    }
  }
}

void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), alpha, A, static_cast<int>(lda),
              B, static_cast<int>(ldb), beta, C, static_cast<int>(ldc));
}

// The tiled bf16 product with scratch of element type T (float: bf16 values for sgemm; uint16_t: bf16 bits
// for oneDNN). tile(ta, tb, mc, nc, kc, alpha, a, b, beta, c) multiplies packed blocks: a is op(A)'s block
// stored as A is ([mc, kc], or [kc, mc] when ta), b likewise ([kc, nc], or [nc, kc] when tb).
template <typename T, typename Tile>
void tiled_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const Tile& tile) {
  const int64_t tm = balanced_tile(M, kTileM), tn = balanced_tile(N, kTileN), tk = balanced_tile(K, kTileK);
  // Uninitialized scratch (every element used is written first).
  const std::unique_ptr<T[]> a_buf(new T[static_cast<size_t>(tm * tk)]),
      b_buf(new T[static_cast<size_t>(tk * tn)]);
  T* const a = a_buf.get();
  T* const b = b_buf.get();
  for (int64_t k0 = 0; k0 < K; k0 += tk) {
    const int64_t kc = std::min(tk, K - k0);
    const float beta_k = k0 == 0 ? beta : 1.0f;  // later K panels accumulate onto the first
    for (int64_t m0 = 0; m0 < M; m0 += tm) {
      const int64_t mc = std::min(tm, M - m0);
      if (ta)
        round_block(A + k0 * lda + m0, lda, kc, mc, a);
      else
        round_block(A + m0 * lda + k0, lda, mc, kc, a);
      for (int64_t n0 = 0; n0 < N; n0 += tn) {
        const int64_t nc = std::min(tn, N - n0);
        if (m0 == 0 || tn < N) {  // one column tile: its block is still in b from the first row tile
          if (tb)
            round_block(B + n0 * ldb + k0, ldb, nc, kc, b);
          else
            round_block(B + k0 * ldb + n0, ldb, kc, nc, b);
        }
        tile(ta, tb, mc, nc, kc, alpha, a, b, beta_k, C + m0 * ldc + n0, ldc);
      }
    }
  }
}

void scale_c(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) C[m * ldc + n] = beta == 0.0f ? 0.0f : beta * C[m * ldc + n];
}

#if defined(__x86_64__) || defined(__i386__)
bool cpuid7(unsigned sub, unsigned* eax, unsigned* edx) {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  if (sub > a) return false;  // leaf 7 subleaf 0 EAX: the highest subleaf
  if (sub != 0 && !__get_cpuid_count(7, sub, &a, &b, &c, &d)) return false;
  *eax = a, *edx = d;
  return true;
}
#endif

Bf16Gemm choose_path() {
  const char* env = std::getenv("MINISEQ_CPU_BF16_GEMM");
  const std::string v = env ? env : "";
  if (v == "onednn") {
    MS_CHECK(onednn_compiled(),
             "MINISEQ_CPU_BF16_GEMM=onednn, but this miniseq was built without oneDNN "
             "(apt install libdnnl-dev, then reconfigure)");
    return Bf16Gemm::OneDnn;
  }
  if (v == "fallback") return Bf16Gemm::Fallback;
  MS_CHECK(v.empty(), "MINISEQ_CPU_BF16_GEMM must be onednn or fallback (or unset), got '", v, "'");
  return onednn_compiled() && (cpu_has_avx512_bf16() || cpu_has_amx_bf16()) ? Bf16Gemm::OneDnn
                                                                            : Bf16Gemm::Fallback;
}

}  // namespace

float round_to_bf16(float x) {
  return to_bf16_value(x);
}

bool onednn_compiled() {
  return detail::onednn_available();
}

bool cpu_has_avx512_bf16() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, edx = 0;  // CPUID.(EAX=7, ECX=1):EAX bit 5 = AVX512_BF16
  return cpuid7(1, &eax, &edx) && ((eax >> 5) & 1u) && __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

bool cpu_has_amx_bf16() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, edx = 0;  // CPUID.(EAX=7, ECX=0):EDX bit 22 = AMX-BF16
  return cpuid7(0, &eax, &edx) && ((edx >> 22) & 1u);
#else
  return false;
#endif
}

Bf16Gemm bf16_gemm_path() {
  static const Bf16Gemm path = choose_path();
  return path;
}

std::string bf16_gemm_description() {
  const bool forced = std::getenv("MINISEQ_CPU_BF16_GEMM") && *std::getenv("MINISEQ_CPU_BF16_GEMM");
  const std::string feature = cpu_has_amx_bf16() ? "amx_bf16" : cpu_has_avx512_bf16() ? "avx512_bf16" : "";
  if (bf16_gemm_path() == Bf16Gemm::OneDnn) {
    if (!feature.empty())
      return "oneDNN (" + feature + ")" + (forced ? ", forced by MINISEQ_CPU_BF16_GEMM" : "");
    return "oneDNN, forced by MINISEQ_CPU_BF16_GEMM (no avx512_bf16 on this CPU: emulated, slower than fp32)";
  }
  if (forced) return "portable fallback, forced by MINISEQ_CPU_BF16_GEMM (no speed-up)";
  if (!onednn_compiled())
    return "portable fallback (built without oneDNN: no speed-up; apt install libdnnl-dev, then reconfigure)";
  return "portable fallback (no avx512_bf16 on this CPU: no speed-up)";
}

void gemm_bf16(Bf16Gemm path, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) return scale_c(M, N, beta, C, ldc);
  if (path == Bf16Gemm::OneDnn) {
    MS_CHECK(onednn_compiled(),
             "the oneDNN bf16 GEMM was requested, but this miniseq was built without oneDNN");
    tiled_bf16<uint16_t>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
                         [](bool ta, bool tb, int64_t mc, int64_t nc, int64_t kc, float al, const uint16_t* a,
                            const uint16_t* b, float be, float* c, int64_t ld) {
                           detail::onednn_matmul_bf16(ta, tb, mc, nc, kc, al, a, b, be, c, ld);
                         });
    return;
  }
  tiled_bf16<float>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
                    [](bool ta, bool tb, int64_t mc, int64_t nc, int64_t kc, float al, const float* a,
                       const float* b, float be, float* c, int64_t ld) {
                      sgemm(ta, tb, mc, nc, kc, al, a, ta ? mc : kc, b, tb ? kc : nc, be, c, ld);
                    });
}

void gemm(Math math, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (math == Math::BF16)
    return gemm_bf16(bf16_gemm_path(), trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace miniseq::cpu
