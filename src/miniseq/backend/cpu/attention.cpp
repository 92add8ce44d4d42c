// Attention on the CPU: the dispatch between the packed micro-kernel paths (attention_tiles.h, compiled for
// AVX-512 in attention_avx512.cpp and for AVX2 + FMA in attention_avx2.cpp; the fast ones) and the portable
// path here, which runs the same FlashAttention-2 algorithm with its tile products in OpenBLAS sgemm (single
// threaded inside our OpenMP tasks) and the softmax through simd_math.h. Geometry and masks:
// attention_common.h.
//
// Portable path. Forward, task = (b, kv head, query tile), for each key tile:  Sc = scale·Q·Kᵀ, mask,
// m' = max(m, rowmax Sc), P = exp(Sc − m'), l = l·e^(m−m') + ΣP, O = O·e^(m−m') + P·V.  Then out = O / l,
// lse = m + log l (natural log-sum-exp of the scaled scores, saved by forward for backward).
// Backward, task = (b, kv head) (it owns dq of its G heads and dk, dv of its kv head, so no two tasks write
// the same memory), for each query tile, Di = rowsum(dO ∘ O), then for each key tile:
//   P = exp(Sc − lse),  dV += Pᵀ·dO,  dP = dO·Vᵀ,  dS = scale·P∘(dP − Di),  dK += dSᵀ·Q,  dQ += dS·K.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <cblas.h>

#include "miniseq/backend/cpu/attention_common.h"
#include "miniseq/backend/cpu/cpu_backend.h"
#include "miniseq/backend/cpu/simd_math.h"
#include "miniseq/ops/attention_mask.h"

namespace miniseq {

namespace {

constexpr int64_t kQTile = 64;   // query positions per tile (× G stacked heads = rows of the tile products)
constexpr int64_t kKTile = 128;  // keys per tile; also the leading dimension of the score buffers

using Geometry = cpu::AttnGeometry;

inline int ci(int64_t x) {
  return static_cast<int>(x);
}

// Sc [M, kKTile] = scale · Qt [M, D] · K[j0 : j0+nk]ᵀ, then −inf where the mask of the row's head forbids
// (only on boundary tiles).
void tile_scores(const Geometry& g, int64_t kvh, const float* qt, const float* kt, int64_t M, int64_t nq,
                 int64_t i0, int64_t j0, int64_t nk, float* sc) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ci(M), ci(nk), ci(g.D), g.scale, qt, ci(g.D), kt,
              ci(g.kv_stride()), 0.0f, sc, ci(kKTile));
  if (g.tile_all(kvh, i0, nq, j0, nk)) return;
  for (int64_t r = 0; r < M; ++r) {
    const int64_t i = i0 + r % nq;
    const AttentionMask m = g.head_mask(kvh, r / nq);
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

void forward_blas(const Geometry& g, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                  const Tensor& lse) {
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
      g.key_range(kvh, i0, nq, jlo, jhi);
      for (int64_t j0 = jlo; j0 <= jhi; j0 += kKTile) {
        const int64_t nk = std::min(kKTile, jhi + 1 - j0);
        if (!g.tile_any(kvh, i0, nq, j0, nk)) continue;
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

void backward_blas(const Geometry& g, const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                   const Tensor& out, const Tensor& lse, const Tensor& dq, const Tensor& dk,
                   const Tensor& dv) {
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
        g.key_range(kvh, i0, nq, jlo, jhi);
        for (int64_t j0 = jlo; j0 <= jhi; j0 += kKTile) {
          const int64_t nk = std::min(kKTile, jhi + 1 - j0);
          if (!g.tile_any(kvh, i0, nq, j0, nk)) continue;
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

// Which kernel runs: the packed AVX-512 or AVX2 + FMA micro-kernel path where the CPU has it, OpenBLAS tiles
// otherwise (the portable path). MINISEQ_CPU_ATTENTION=blas|avx2|avx512 picks one (tests and benchmarks
// compare them); a path the CPU lacks falls back to the best one it has.
enum class Kernel { kBlas, kAvx2, kAvx512 };

Kernel pick_kernel() {
  static const bool has_avx512 = __builtin_cpu_supports("avx512f");
  static const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  Kernel best = has_avx512 ? Kernel::kAvx512 : has_avx2 ? Kernel::kAvx2 : Kernel::kBlas;
  const char* env = std::getenv("MINISEQ_CPU_ATTENTION");
  if (env == nullptr) return best;
  const std::string want(env);
  if (want == "blas") return Kernel::kBlas;
  if (want == "avx2" && has_avx2) return Kernel::kAvx2;
  return best;
}

}  // namespace

const char* cpu::attention_kernel_name() {
  switch (pick_kernel()) {
    case Kernel::kAvx512:
      return "avx512";
    case Kernel::kAvx2:
      return "avx2";
    default:
      return "blas";
  }
}

void CpuBackend::attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                   const Tensor& lse, const AttentionParams& p) {
  const Geometry g = cpu::attn_geometry(q, k, p);
  MS_DASSERT(v.shape == k.shape && out.shape == q.shape && lse.numel() == g.B * g.H * g.S);
  switch (pick_kernel()) {
    case Kernel::kAvx512:
      cpu::attention_forward_avx512(g, q.f32(), k.f32(), v.f32(), out.f32(), lse.f32());
      break;
    case Kernel::kAvx2:
      cpu::attention_forward_avx2(g, q.f32(), k.f32(), v.f32(), out.f32(), lse.f32());
      break;
    default:
      forward_blas(g, q, k, v, out, lse);
  }
}

void CpuBackend::attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& out, const Tensor& lse, const Tensor& dq, const Tensor& dk,
                                    const Tensor& dv, const AttentionParams& p) {
  const Geometry g = cpu::attn_geometry(q, k, p);
  MS_DASSERT(p.q_offset == 0 && g.Sk == g.S);
  MS_DASSERT(v.shape == k.shape && out.shape == q.shape && dout.shape == q.shape && dq.shape == q.shape &&
             dk.shape == k.shape && dv.shape == k.shape && lse.numel() == g.B * g.H * g.S);
  switch (pick_kernel()) {
    case Kernel::kAvx512:
      cpu::attention_backward_avx512(g, dout.f32(), q.f32(), k.f32(), v.f32(), out.f32(), lse.f32(), dq.f32(),
                                     dk.f32(), dv.f32());
      break;
    case Kernel::kAvx2:
      cpu::attention_backward_avx2(g, dout.f32(), q.f32(), k.f32(), v.f32(), out.f32(), lse.f32(), dq.f32(),
                                   dk.f32(), dv.f32());
      break;
    default:
      backward_blas(g, dout, q, k, v, out, lse, dq, dk, dv);
  }
}

}  // namespace miniseq
