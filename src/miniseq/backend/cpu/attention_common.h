// Shared by the CPU attention kernels (attention.cpp: the OpenBLAS path and the dispatch; attention_avx2.cpp,
// attention_avx512.cpp: the packed micro-kernel paths): the problem geometry and the per-head mask helpers.
//
// q, out, dout, dq [B, S, H, D]; k, v, dk, dv [B, Sk, Hkv, D]; lse [B, H, S]. GQA: query head h reads kv head
// h / G, G = H / Hkv; the G query heads of one kv head are stacked into one tile (row r = g·nq + ii ↔ head
// kvh·G + g, position i0 + ii), so every K/V tile is loaded once per group. With S²-Attn groups the stacked
// heads may have two different masks (a kv head can serve both unshifted and shifted query heads): each row
// is masked with its own head's mask, a tile is skipped only when no head sees it, and key loops cover the
// union of the heads' ranges.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "miniseq/backend/cpu/cpu_backend.h"
#include "miniseq/ops/attention_mask.h"

namespace miniseq::cpu {

struct AttnGeometry {
  int64_t B, S, Sk, H, Hkv, D, G;  // S queries, Sk keys (Sk = S except when decoding with a KV cache)
  float scale;
  AttentionMask mask;
  int64_t q_stride() const { return H * D; }     // between consecutive positions of one query head
  int64_t kv_stride() const { return Hkv * D; }  // between consecutive positions of one kv head
  int64_t q_off(int64_t b, int64_t i, int64_t h) const { return ((b * S + i) * H + h) * D; }
  int64_t kv_off(int64_t b, int64_t j, int64_t kvh) const { return ((b * Sk + j) * Hkv + kvh) * D; }

  // The mask of stacked head hg (0 … G-1) of kv head kvh.
  AttentionMask head_mask(int64_t kvh, int64_t hg) const { return mask.for_head(kvh * G + hg, H); }
  // Keys [jlo, jhi] that any stacked head of kv head kvh sees from query tile [i0, i0+nq).
  void key_range(int64_t kvh, int64_t i0, int64_t nq, int64_t& jlo, int64_t& jhi) const {
    jlo = Sk;
    jhi = -1;
    for (int64_t hg = 0; hg < G; ++hg) {
      const AttentionMask m = head_mask(kvh, hg);
      jlo = std::min(jlo, m.first_key(i0));
      jhi = std::max(jhi, m.last_key(i0 + nq - 1));
    }
  }
  // Does any stacked head see a pair of the tile, and do all heads see all of its pairs?
  bool tile_any(int64_t kvh, int64_t i0, int64_t nq, int64_t j0, int64_t nk) const {
    for (int64_t hg = 0; hg < G; ++hg)
      if (head_mask(kvh, hg).tile_any(i0, i0 + nq, j0, j0 + nk)) return true;
    return false;
  }
  bool tile_all(int64_t kvh, int64_t i0, int64_t nq, int64_t j0, int64_t nk) const {
    for (int64_t hg = 0; hg < G; ++hg)
      if (!head_mask(kvh, hg).tile_all(i0, i0 + nq, j0, j0 + nk)) return false;
    return true;
  }
};

inline AttnGeometry attn_geometry(const Tensor& q, const Tensor& k, const AttentionParams& p) {
  MS_DASSERT(q.ndim() == 4 && k.ndim() == 4);
  AttnGeometry g{};
  g.B = q.size(0);
  g.S = q.size(1);
  g.H = q.size(2);
  g.D = q.size(3);
  g.Hkv = k.size(2);
  g.Sk = k.size(1);
  MS_DASSERT(k.size(0) == g.B && k.size(3) == g.D && g.H % g.Hkv == 0);
  MS_DASSERT(p.q_offset >= 0 && g.S + p.q_offset <= g.Sk);
  g.G = g.H / g.Hkv;
  g.scale = p.scale != 0.0f ? p.scale : 1.0f / std::sqrt(static_cast<float>(g.D));
  g.mask = AttentionMask{g.Sk, p.causal, p.sliding_window, p.q_offset, p.s2_group};
  g.mask.head_offset = p.head_offset, g.mask.heads_total = p.heads_total;
  return g;
}

// The packed micro-kernel paths (attention_avx512.cpp, attention_avx2.cpp), compiled for their instruction
// sets whatever -march says; call them only where the CPU has them (attention.cpp dispatches).
void attention_forward_avx512(const AttnGeometry& g, const float* q, const float* k, const float* v,
                              float* out, float* lse);
void attention_backward_avx512(const AttnGeometry& g, const float* dout, const float* q, const float* k,
                               const float* v, const float* out, const float* lse, float* dq, float* dk,
                               float* dv);
void attention_forward_avx2(const AttnGeometry& g, const float* q, const float* k, const float* v, float* out,
                            float* lse);
void attention_backward_avx2(const AttnGeometry& g, const float* dout, const float* q, const float* k,
                             const float* v, const float* out, const float* lse, float* dq, float* dk,
                             float* dv);

// The kernel attention_forward/backward use now: "avx512", "avx2" or "blas" (attention.cpp).
const char* attention_kernel_name();

}  // namespace miniseq::cpu
