// The packed attention kernels (attention_tiles.h) for AVX2 + FMA: 8 floats a vector, a 6 × 16 register tile
// (12 accumulators of the 16 registers). Compiled for at least AVX2 + FMA whatever -march says (a build
// without -march=native, MINISEQ_NATIVE=OFF, gets exactly that); attention.cpp calls it where the CPU has
// AVX2 and FMA.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <immintrin.h>

#include "miniseq/backend/cpu/attention_common.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace miniseq::cpu {
namespace {

struct Avx2 {
  static constexpr int64_t W = 8;
  static constexpr int MR = 6, NV = 2;
  using R = __m256;
  static R zero() { return _mm256_setzero_ps(); }
  static R set1(float x) { return _mm256_set1_ps(x); }
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, R x) { _mm256_storeu_ps(p, x); }
  static R bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R max(R a, R b) { return _mm256_max_ps(a, b); }
  // x where lo <= j <= hi, −inf elsewhere
  static R masked(R x, R lo, R hi, R j) {
    const R ok = _mm256_and_ps(_mm256_cmp_ps(lo, j, _CMP_LE_OQ), _mm256_cmp_ps(j, hi, _CMP_LE_OQ));
    return _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), x, ok);
  }
  static R nz(R x) {  // −inf → 0
    return _mm256_blendv_ps(x, zero(), _mm256_cmp_ps(x, _mm256_set1_ps(-INFINITY), _CMP_EQ_OQ));
  }
  // exp with the reduction and polynomial of simd_math.h's exp512; 2^n built in the exponent bits, so the
  // range is clamped to [−87.3, 88] (n in [−126, 127]); below −87.3 (and −inf): 0. Attention only takes x <=
  // ~0.
  static R exp(R x) {
    const R lo = _mm256_set1_ps(-87.33654f), hi = _mm256_set1_ps(88.0f);
    const R underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    const R n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    R r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    R p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(underflow, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
  }
};

#include "miniseq/backend/cpu/attention_tiles.h"

}  // namespace

void attention_forward_avx2(const AttnGeometry& g, const float* q, const float* k, const float* v, float* out,
                            float* lse) {
  forward<Avx2>(g, q, k, v, out, lse);
}

void attention_backward_avx2(const AttnGeometry& g, const float* dout, const float* q, const float* k,
                             const float* v, const float* out, const float* lse, float* dq, float* dk,
                             float* dv) {
  backward<Avx2>(g, dout, q, k, v, out, lse, dq, dk, dv);
}

}  // namespace miniseq::cpu

#pragma GCC pop_options
