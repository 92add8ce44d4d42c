// Rotary position embedding, Hugging Face rotate_half convention, in place on x [B, S, Hx, D].
//
// The angle is computed with Hugging Face's fp32 arithmetic (transformers modeling_rope_utils.py,
// _compute_default_rope_parameters, and LlamaRotaryEmbedding.forward):
//   inv_freq[i] = 1.0 / (theta ** (float(2i) / D))        every step in fp32, i < D/2
//   linear scaling (_compute_linear_scaling_rope_parameters): inv_freq /= factor   (fp32 division)
//   freqs = float(position) · inv_freq                    (fp32 product: a matmul with inner size 1)
//   emb = cat(freqs, freqs); cos = emb.cos(); sin = emb.sin()   (fp32)
//   x_rot = x·cos + rotate_half(x)·sin,  rotate_half(x) = cat(−x2, x1)
// Older transformers releases divided the positions instead (position / factor) · inv_freq; both agree
// exactly for power-of-two factors (the usual 2, 4, 8) and differ in the last bit of the angle otherwise.
// torch computes pow/cos/sin with SLEEF (≤ 1 ulp); we use the C library's (≤ 1 ulp), so the tables may differ
// in the last bit.
#include <cmath>
#include <vector>

#include "miniseq/backend/cpu/cpu_backend.h"

namespace miniseq {

namespace {

// cos and sin tables [S, D/2] for the given positions.
void rope_tables(const int32_t* positions, int64_t S, int64_t D, const RopeParams& p,
                 std::vector<float>& cos_t, std::vector<float>& sin_t) {
  const int64_t half = D / 2;
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const float expo = static_cast<float>(2 * i) / static_cast<float>(D);
    const float inv = 1.0f / std::pow(p.theta, expo);
    inv_freq[static_cast<size_t>(i)] = inv / p.linear_factor;
  }
  cos_t.resize(static_cast<size_t>(S * half));
  sin_t.resize(static_cast<size_t>(S * half));
#pragma omp parallel for schedule(static) if (S * half > (1 << 14))
  for (int64_t s = 0; s < S; ++s)
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(positions[s]) * inv_freq[static_cast<size_t>(i)];
      cos_t[static_cast<size_t>(s * half + i)] = std::cos(angle);
      sin_t[static_cast<size_t>(s * half + i)] = std::sin(angle);
    }
}

// sign = +1: forward rotation; sign = −1: its transpose (the inverse rotation), applied to gradients.
void rope_apply(const Tensor& x, const int32_t* positions, const RopeParams& p, float sign) {
  MS_DASSERT(x.ndim() == 4);
  const int64_t B = x.size(0), S = x.size(1), Hx = x.size(2), D = x.size(3), half = D / 2;
  MS_DASSERT(D % 2 == 0);
  std::vector<float> cos_t, sin_t;
  rope_tables(positions, S, D, p, cos_t, sin_t);
  float* px = x.f32();
#pragma omp parallel for collapse(2) schedule(static) if (B * S * Hx * D > (1 << 15))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s) {
      const float* c = cos_t.data() + s * half;
      const float* sn = sin_t.data() + s * half;
      for (int64_t h = 0; h < Hx; ++h) {
        float* x1 = px + ((b * S + s) * Hx + h) * D;
        float* x2 = x1 + half;
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          const float a = x1[i], bb = x2[i], si = sign * sn[i];
          x1[i] = a * c[i] - bb * si;  // first half:  x1·cos + (−x2)·sin
          x2[i] = bb * c[i] + a * si;  // second half: x2·cos + x1·sin
        }
      }
    }
}

}  // namespace

void CpuBackend::rope_forward(const Tensor& x, const int32_t* positions, const RopeParams& p) {
  rope_apply(x, positions, p, 1.0f);
}

void CpuBackend::rope_backward(const Tensor& dx, const int32_t* positions, const RopeParams& p) {
  rope_apply(dx, positions, p, -1.0f);
}

}  // namespace miniseq
