// Attention, flash-style (FlashAttention-2 algorithm) on the CPU: tiles of queries × keys, online softmax
// with a running max and sum per query row, never an S × S buffer. The tile products go through OpenBLAS
// sgemm (single threaded inside our OpenMP tasks), the softmax through the AVX-512 exp of simd_math.h.
//
// q, out, dout, dq [B, S, H, D]; k, v, dk, dv [B, S, Hkv, D]; lse [B, H, S] (natural log-sum-exp of the
// scaled scores, saved by forward for backward). GQA: query head h reads kv head h / G, G = H / Hkv; the G
// query heads of one kv head are stacked into one tile of G·nq rows (row r = g·nq + ii ↔ head kvh·G + g,
// position i0 + ii), so every K/V tile is loaded once per group. Which keys a query sees:
// ops/attention_mask.h. With S²-Attn groups the stacked heads may have two different masks (a kv head can
// serve both unshifted and shifted query heads): each row is masked with its own head's mask, a tile is
// skipped only when no head sees it, and the key loop covers the union of the heads' ranges.
//
// Forward, task = (b, kv head, query tile), for each key tile:  Sc = scale·Q·Kᵀ, mask, m' = max(m, rowmax
// Sc), P = exp(Sc − m'), l = l·e^(m−m') + ΣP, O = O·e^(m−m') + P·V.  Then out = O / l, lse = m + log l.
// Backward, task = (b, kv head) (it owns dq of its G heads and dk, dv of its kv head, so no two tasks write
// the same memory), Di = rowsum(dO ∘ O) first, then for each key tile (dK, dV accumulate in the tile) and
// each query tile:
//   P = exp(Sc − lse),  dV += Pᵀ·dO,  dP = dO·Vᵀ,  dS = scale·P∘(dP − Di),  dK += dSᵀ·Q,  dQ += dS·K.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include <cblas.h>

#include "miniseq/backend/cpu/cpu_backend.h"
#include "miniseq/backend/cpu/simd_math.h"
#include "miniseq/ops/attention_mask.h"

namespace miniseq {

namespace {

constexpr int64_t kQTile = 64;   // query positions per tile (× G stacked heads = rows of the tile products)
constexpr int64_t kKTile = 128;  // keys per tile; also the leading dimension of the score buffers

struct Geometry {
  int64_t B, S, Sk, H, Hkv, D, G;  // S queries, Sk keys (Sk = S except when decoding with a KV cache)
  float scale;
  AttentionMask mask;
  int64_t q_stride() const { return H * D; }     // between consecutive positions of one query head
  int64_t kv_stride() const { return Hkv * D; }  // between consecutive positions of one kv head
  int64_t q_off(int64_t b, int64_t i, int64_t h) const { return ((b * S + i) * H + h) * D; }
  int64_t kv_off(int64_t b, int64_t j, int64_t kvh) const { return ((b * Sk + j) * Hkv + kvh) * D; }
};

Geometry geometry(const Tensor& q, const Tensor& k, const AttentionParams& p) {
  MS_DASSERT(q.ndim() == 4 && k.ndim() == 4);
  Geometry g{};
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
  return g;
}

// The mask of stacked head hg (0 … G-1) of kv head kvh.
AttentionMask head_mask(const Geometry& g, int64_t kvh, int64_t hg) {
  return g.mask.for_head(kvh * g.G + hg, g.H);
}

// Keys [jlo, jhi] that any stacked head of kv head kvh sees from query tile [i0, i0+nq).
void key_range(const Geometry& g, int64_t kvh, int64_t i0, int64_t nq, int64_t& jlo, int64_t& jhi) {
  jlo = g.Sk;
  jhi = -1;
  for (int64_t hg = 0; hg < g.G; ++hg) {
    const AttentionMask m = head_mask(g, kvh, hg);
    jlo = std::min(jlo, m.first_key(i0));
    jhi = std::max(jhi, m.last_key(i0 + nq - 1));
  }
}

// Does any stacked head see a pair of the tile, and do all heads see all of its pairs?
bool tile_any(const Geometry& g, int64_t kvh, int64_t i0, int64_t nq, int64_t j0, int64_t nk) {
  for (int64_t hg = 0; hg < g.G; ++hg)
    if (head_mask(g, kvh, hg).tile_any(i0, i0 + nq, j0, j0 + nk)) return true;
  return false;
}
bool tile_all(const Geometry& g, int64_t kvh, int64_t i0, int64_t nq, int64_t j0, int64_t nk) {
  for (int64_t hg = 0; hg < g.G; ++hg)
    if (!head_mask(g, kvh, hg).tile_all(i0, i0 + nq, j0, j0 + nk)) return false;
  return true;
}

inline int ci(int64_t x) {
  return static_cast<int>(x);
}

// Sc [M, kKTile] = scale · Qt [M, D] · K[j0 : j0+nk]ᵀ, then −inf where the mask of the row's head forbids
// (only on boundary tiles).
void tile_scores(const Geometry& g, int64_t kvh, const float* qt, const float* kt, int64_t M, int64_t nq,
                 int64_t i0, int64_t j0, int64_t nk, float* sc) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ci(M), ci(nk), ci(g.D), g.scale, qt, ci(g.D), kt,
              ci(g.kv_stride()), 0.0f, sc, ci(kKTile));
  if (tile_all(g, kvh, i0, nq, j0, nk)) return;
  for (int64_t r = 0; r < M; ++r) {
    const int64_t i = i0 + r % nq;
    const AttentionMask m = head_mask(g, kvh, r / nq);
    const int64_t lo = std::clamp<int64_t>(m.first_key(i) - j0, 0, nk);  // allowed: [lo, hi)
    const int64_t hi = std::clamp<int64_t>(m.last_key(i) + 1 - j0, lo, nk);
    float* row = sc + r * kKTile;
    for (int64_t c = 0; c < lo; ++c) row[c] = -INFINITY;
    for (int64_t c = hi; c < nk; ++c) row[c] = -INFINITY;
  }
}

// Gathers rows of the G stacked heads of query tile [i0, i0+nq) of kv head kvh: dst [G·nq, D].
void gather_q(const Geometry& g, const float* src, int64_t b, int64_t kvh, int64_t i0, int64_t nq,
              float* dst) {
  for (int64_t hg = 0; hg < g.G; ++hg)
    for (int64_t ii = 0; ii < nq; ++ii)
      std::memcpy(dst + (hg * nq + ii) * g.D, src + g.q_off(b, i0 + ii, kvh * g.G + hg),
                  static_cast<size_t>(g.D) * sizeof(float));
}

}  // namespace

void CpuBackend::attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                   const Tensor& lse, const AttentionParams& p) {
  const Geometry g = geometry(q, k, p);
  MS_DASSERT(v.shape == k.shape && out.shape == q.shape && lse.numel() == g.B * g.H * g.S);
  const float* pq = q.f32();
  const float* pk = k.f32();
  const float* pv = v.f32();
  float* po = out.f32();
  float* plse = lse.f32();
  const int64_t nqt = (g.S + kQTile - 1) / kQTile;
  const int64_t tasks = g.B * g.Hkv * nqt;
  const int64_t max_rows = g.G * kQTile;

#pragma omp parallel
  {
    std::vector<float> qt(static_cast<size_t>(max_rows * g.D)), acc(static_cast<size_t>(max_rows * g.D));
    std::vector<float> sc(static_cast<size_t>(max_rows * kKTile));
    std::vector<float> m(static_cast<size_t>(max_rows)), l(static_cast<size_t>(max_rows));
    // Later query tiles see more keys under a causal mask: hand them out first for a better balance.
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t qti = nqt - 1 - task % nqt, kvh = (task / nqt) % g.Hkv, b = task / (nqt * g.Hkv);
      const int64_t i0 = qti * kQTile, nq = std::min(kQTile, g.S - i0), M = g.G * nq;
      gather_q(g, pq, b, kvh, i0, nq, qt.data());
      std::fill_n(acc.data(), M * g.D, 0.0f);
      std::fill_n(m.data(), M, -INFINITY);
      std::fill_n(l.data(), M, 0.0f);
      int64_t jlo, jhi;
      key_range(g, kvh, i0, nq, jlo, jhi);
      for (int64_t j0 = jlo; j0 <= jhi; j0 += kKTile) {
        const int64_t nk = std::min(kKTile, jhi + 1 - j0);
        if (!tile_any(g, kvh, i0, nq, j0, nk)) continue;
        tile_scores(g, kvh, qt.data(), pk + g.kv_off(b, j0, kvh), M, nq, i0, j0, nk, sc.data());
        for (int64_t r = 0; r < M; ++r) {
          float* row = sc.data() + r * kKTile;
          const float m_new = std::max(m[r], cpu::max_of(row, nk));
          if (m_new == -INFINITY) {  // nothing visible to this row yet: P = 0
            std::fill_n(row, nk, 0.0f);
            continue;
          }
          const float alpha = cpu::exp_scalar(m[r] - m_new);  // 0 when m was −inf
          const float sum = static_cast<float>(cpu::exp_affine_sum(row, 1.0f, -m_new, row, nk));
          l[r] = l[r] * alpha + sum;
          m[r] = m_new;
          if (alpha != 1.0f) {
            float* o = acc.data() + r * g.D;
#pragma omp simd
            for (int64_t c = 0; c < g.D; ++c) o[c] *= alpha;
          }
        }
        // acc [M, D] += P [M, nk] · V [nk, D]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ci(M), ci(g.D), ci(nk), 1.0f, sc.data(),
                    ci(kKTile), pv + g.kv_off(b, j0, kvh), ci(g.kv_stride()), 1.0f, acc.data(), ci(g.D));
      }
      for (int64_t hg = 0; hg < g.G; ++hg) {
        const int64_t h = kvh * g.G + hg;
        for (int64_t ii = 0; ii < nq; ++ii) {
          const int64_t r = hg * nq + ii;
          const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
          const float* o = acc.data() + r * g.D;
          float* dst = po + g.q_off(b, i0 + ii, h);
#pragma omp simd
          for (int64_t c = 0; c < g.D; ++c) dst[c] = o[c] * inv;
          plse[(b * g.H + h) * g.S + i0 + ii] = l[r] > 0.0f ? m[r] + std::log(l[r]) : -INFINITY;
        }
      }
    }
  }
}

void CpuBackend::attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& out, const Tensor& lse, const Tensor& dq, const Tensor& dk,
                                    const Tensor& dv, const AttentionParams& p) {
  const Geometry g = geometry(q, k, p);
  MS_DASSERT(p.q_offset == 0 && g.Sk == g.S);
  MS_DASSERT(v.shape == k.shape && out.shape == q.shape && dout.shape == q.shape && dq.shape == q.shape &&
             dk.shape == k.shape && dv.shape == k.shape && lse.numel() == g.B * g.H * g.S);
  const float* pq = q.f32();
  const float* pk = k.f32();
  const float* pv = v.f32();
  const float* po = out.f32();
  const float* pdo = dout.f32();
  const float* plse = lse.f32();
  float* pdq = dq.f32();
  float* pdk = dk.f32();
  float* pdv = dv.f32();
  const int64_t tasks = g.B * g.Hkv;
  const int64_t max_rows = g.G * kQTile;

#pragma omp parallel
  {
    std::vector<float> qt(static_cast<size_t>(max_rows * g.D)), dot(static_cast<size_t>(max_rows * g.D)),
        dqt(static_cast<size_t>(max_rows * g.D));
    std::vector<float> pt(static_cast<size_t>(max_rows * kKTile)),
        dpt(static_cast<size_t>(max_rows * kKTile));
    std::vector<float> lse_t(static_cast<size_t>(max_rows)), di_t(static_cast<size_t>(max_rows));
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t kvh = task % g.Hkv, b = task / g.Hkv;
      for (int64_t j = 0; j < g.S; ++j) {  // dk, dv of this kv head: accumulated below, from zero
        std::fill_n(pdk + g.kv_off(b, j, kvh), g.D, 0.0f);
        std::fill_n(pdv + g.kv_off(b, j, kvh), g.D, 0.0f);
      }
      for (int64_t i0 = 0; i0 < g.S; i0 += kQTile) {
        const int64_t nq = std::min(kQTile, g.S - i0), M = g.G * nq;
        gather_q(g, pq, b, kvh, i0, nq, qt.data());
        gather_q(g, pdo, b, kvh, i0, nq, dot.data());
        std::fill_n(dqt.data(), M * g.D, 0.0f);
        for (int64_t hg = 0; hg < g.G; ++hg)
          for (int64_t ii = 0; ii < nq; ++ii) {
            const int64_t r = hg * nq + ii, h = kvh * g.G + hg;
            lse_t[static_cast<size_t>(r)] = plse[(b * g.H + h) * g.S + i0 + ii];
            const float* orow = po + g.q_off(b, i0 + ii, h);
            const float* drow = dot.data() + r * g.D;
            float s = 0.0f;  // Di = rowsum(dO ∘ O)
#pragma omp simd reduction(+ : s)
            for (int64_t c = 0; c < g.D; ++c) s += drow[c] * orow[c];
            di_t[static_cast<size_t>(r)] = s;
          }
        int64_t jlo, jhi;
        key_range(g, kvh, i0, nq, jlo, jhi);
        for (int64_t j0 = jlo; j0 <= jhi; j0 += kKTile) {
          const int64_t nk = std::min(kKTile, jhi + 1 - j0);
          if (!tile_any(g, kvh, i0, nq, j0, nk)) continue;
          const float* kt = pk + g.kv_off(b, j0, kvh);
          const float* vt = pv + g.kv_off(b, j0, kvh);
          tile_scores(g, kvh, qt.data(), kt, M, nq, i0, j0, nk, pt.data());
          for (int64_t r = 0; r < M; ++r) {  // P = exp(Sc − lse), 0 where masked
            float* row = pt.data() + r * kKTile;
            cpu::exp_affine_sum(row, 1.0f, -lse_t[static_cast<size_t>(r)], row, nk);
          }
          // dV [nk, D] += Pᵀ · dO, straight into dv (owned by this task)
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ci(nk), ci(g.D), ci(M), 1.0f, pt.data(),
                      ci(kKTile), dot.data(), ci(g.D), 1.0f, pdv + g.kv_off(b, j0, kvh), ci(g.kv_stride()));
          // dP [M, nk] = dO · Vᵀ
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ci(M), ci(nk), ci(g.D), 1.0f, dot.data(),
                      ci(g.D), vt, ci(g.kv_stride()), 0.0f, dpt.data(), ci(kKTile));
          for (int64_t r = 0; r < M; ++r) {  // dS = scale · P ∘ (dP − Di), in place of dP
            const float* prow = pt.data() + r * kKTile;
            float* drow = dpt.data() + r * kKTile;
            const float dr = di_t[static_cast<size_t>(r)];
#pragma omp simd
            for (int64_t c = 0; c < nk; ++c) drow[c] = g.scale * prow[c] * (drow[c] - dr);
          }
          // dK [nk, D] += dSᵀ · Q, straight into dk
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ci(nk), ci(g.D), ci(M), 1.0f, dpt.data(),
                      ci(kKTile), qt.data(), ci(g.D), 1.0f, pdk + g.kv_off(b, j0, kvh), ci(g.kv_stride()));
          // dQ tile [M, D] += dS · K
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ci(M), ci(g.D), ci(nk), 1.0f, dpt.data(),
                      ci(kKTile), kt, ci(g.kv_stride()), 1.0f, dqt.data(), ci(g.D));
        }
        for (int64_t hg = 0; hg < g.G; ++hg)
          for (int64_t ii = 0; ii < nq; ++ii)
            std::memcpy(pdq + g.q_off(b, i0 + ii, kvh * g.G + hg), dqt.data() + (hg * nq + ii) * g.D,
                        static_cast<size_t>(g.D) * sizeof(float));
      }
    }
  }
}

}  // namespace miniseq
