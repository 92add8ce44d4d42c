// Vectorized math for the CPU backend: exp over float arrays (AVX-512 when the build targets it, scalar
// otherwise). GCC does not vectorize std::exp without -ffast-math, and softmax/SiLU/cross-entropy are
// exp-bound without it.
//
// exp: Cephes-style range reduction x = n·ln2 + r (ln2 split in two for an exact n·ln2), degree-6 polynomial
// on |r| <= ln2/2, scaling by 2^n with vscalefps. Measured error against double exp: <= 2 ulp over [-87, 88].
// Inputs below -87.3 (including -inf) give exactly 0, which the masked softmax relies on.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__AVX512F__)
// GCC 12 reports a false -Wmaybe-uninitialized inside its own AVX-512 intrinsics (_mm512_undefined_ps in
// min/max/scalef/roundscale); the diagnostic is located in the header, so silencing it here is enough.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace miniseq::cpu {

#if defined(__AVX512F__)
constexpr int kSimdWidth = 16;

inline __m512 exp512(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.33654f);
  const __m512 hi = _mm512_set1_ps(88.72283f);
  const __mmask16 underflow = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);  // also true for -inf
  x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 r2 = _mm512_mul_ps(r, r);
  p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~underflow), _mm512_scalef_ps(p, n));
}
#else
constexpr int kSimdWidth = 1;
#endif

// y[i] = exp(x[i] * a + b) for i < n; y may alias x. Returns Σ y[i] (float lanes, summed in double at the
// end).
inline double exp_affine_sum(const float* x, float a, float b, float* y, int64_t n) {
  int64_t i = 0;
  double total = 0.0;
#if defined(__AVX512F__)
  const __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);
  __m512 acc = _mm512_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    __m512 e = exp512(_mm512_fmadd_ps(_mm512_loadu_ps(x + i), va, vb));
    _mm512_storeu_ps(y + i, e);
    acc = _mm512_add_ps(acc, e);
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    __m512 e = exp512(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), va, vb));
    e = _mm512_maskz_mov_ps(m, e);
    _mm512_mask_storeu_ps(y + i, m, e);
    acc = _mm512_add_ps(acc, e);
    i = n;
  }
  total = _mm512_reduce_add_ps(acc);
#endif
  for (; i < n; ++i) {
    y[i] = std::exp(x[i] * a + b);
    total += y[i];
  }
  return total;
}

// Scalar exp for remainders, same contract as exp512 (std::exp is correctly rounded enough).
inline float exp_scalar(float x) {
  return std::exp(x);
}

// max over n floats (-inf for n == 0).
inline float max_of(const float* x, int64_t n) {
  float m = -INFINITY;
  int64_t i = 0;
#if defined(__AVX512F__)
  __m512 vm = _mm512_set1_ps(-INFINITY);
  for (; i + 16 <= n; i += 16) vm = _mm512_max_ps(vm, _mm512_loadu_ps(x + i));
  m = _mm512_reduce_max_ps(vm);
#endif
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

}  // namespace miniseq::cpu
