// The packed attention kernels (attention_tiles.h) for AVX-512F: 16 floats a vector, a 6 × 64 register tile
// (24 accumulators of the 32 registers). Compiled for AVX-512 whatever -march says; attention.cpp calls it
// only where the CPU has AVX-512F.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

// GCC 12 reports a false -W(maybe-)uninitialized inside its own AVX-512 intrinsics (_mm512_undefined_ps in
// min/max/scalef/roundscale; see simd_math.h); the diagnostic is located in the header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include "miniseq/backend/cpu/attention_common.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")

namespace miniseq::cpu {
namespace {

struct Avx512 {
  static constexpr int64_t W = 16;
  static constexpr int MR = 6, NV = 4;
  using R = __m512;
  static R zero() { return _mm512_setzero_ps(); }
  static R set1(float x) { return _mm512_set1_ps(x); }
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, R x) { _mm512_storeu_ps(p, x); }
  static R bcast(const float* p) { return _mm512_set1_ps(*p); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R max(R a, R b) { return _mm512_max_ps(a, b); }
  // x where lo <= j <= hi, −inf elsewhere
  static R masked(R x, R lo, R hi, R j) {
    const __mmask16 ok = _mm512_cmp_ps_mask(lo, j, _CMP_LE_OQ) & _mm512_cmp_ps_mask(j, hi, _CMP_LE_OQ);
    return _mm512_mask_blend_ps(ok, _mm512_set1_ps(-INFINITY), x);
  }
  static R nz(R x) {  // −inf → 0
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ), x, zero());
  }
  // exp as simd_math.h's exp512 (Cephes reduction, degree-6 polynomial, <= 2 ulp); below −87.3 (and −inf): 0.
  static R exp(R x) {
    const R lo = _mm512_set1_ps(-87.33654f), hi = _mm512_set1_ps(88.72283f);
    const __mmask16 underflow = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    const R n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    R r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    R p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_maskz_mov_ps(static_cast<__mmask16>(~underflow), _mm512_scalef_ps(p, n));
  }
};

#include "miniseq/backend/cpu/attention_tiles.h"

}  // namespace

void attention_forward_avx512(const AttnGeometry& g, const float* q, const float* k, const float* v,
                              float* out, float* lse) {
  forward<Avx512>(g, q, k, v, out, lse);
}

void attention_backward_avx512(const AttnGeometry& g, const float* dout, const float* q, const float* k,
                               const float* v, const float* out, const float* lse, float* dq, float* dk,
                               float* dv) {
  backward<Avx512>(g, dout, q, k, v, out, lse, dq, dk, dv);
}

}  // namespace miniseq::cpu

#pragma GCC pop_options
