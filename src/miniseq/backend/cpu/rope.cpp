// Rotary position embedding, Hugging Face rotate_half convention, in place on x [B, S, Hx, D].
//
// The inverse frequencies come with the call (RopeParams, computed by model/rope_scaling.cpp in transformers'
// fp32 arithmetic for every rope_type). The angle and the tables follow LlamaRotaryEmbedding.forward:
//   freqs = float(position) · inv_freq                    (fp32 product: a matmul with inner size 1)
//   emb = cat(freqs, freqs); cos = emb.cos() · scaling; sin = emb.sin() · scaling   (fp32)
//   x_rot = x·cos + rotate_half(x)·sin,  rotate_half(x) = cat(−x2, x1)
// torch computes cos/sin with SLEEF (≤ 1 ulp); we use the C library's (≤ 1 ulp), so the tables may differ in the
// last bit.
#include <cmath>
#include <vector>

#include "miniseq/backend/cpu/cpu_backend.h"

namespace miniseq {

namespace {

// cos and sin tables [S, D/2] for the given positions.
void rope_tables(const int32_t* positions, int64_t S, int64_t D, const RopeParams& p,
                 std::vector<float>& cos_t, std::vector<float>& sin_t) {
  const int64_t half = D / 2;
  MS_CHECK(static_cast<int64_t>(p.inv_freq.size()) == half, "internal: rope inv_freq has ", p.inv_freq.size(),
           " entries for head_dim ", D);
  const float* inv_freq = p.inv_freq.data();
  const float scaling = p.attention_scaling;
  cos_t.resize(static_cast<size_t>(S * half));
  sin_t.resize(static_cast<size_t>(S * half));
#pragma omp parallel for schedule(static) if (S * half > (1 << 14))
  for (int64_t s = 0; s < S; ++s)
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(positions[s]) * inv_freq[i];
      cos_t[static_cast<size_t>(s * half + i)] = std::cos(angle) * scaling;
      sin_t[static_cast<size_t>(s * half + i)] = std::sin(angle) * scaling;
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
