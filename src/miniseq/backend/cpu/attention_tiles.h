// The packed, cache-blocked CPU attention (FlashAttention-2 algorithm) over a vector-ISA traits class V: one
// register-blocked micro-kernel for every tile product, the softmax steps fused into the products' epilogues,
// all scratch allocated once per call and thread. Included by attention_avx512.cpp and attention_avx2.cpp
// after their `#pragma GCC target`, inside an anonymous namespace, so every function here is compiled for
// that instruction set and private to that file (nothing compiled for AVX-512 can be merged into the AVX2
// path).
//
// V provides: W (floats per vector), MR × NV (register tile: MR rows × NV vectors), the vector type R and
// zero/set1/load/store/bcast/fma/add/sub/mul/max/exp/masked (masked(x, lo, hi, j): x where lo <= j <= hi,
// else −inf) and nz (−inf → 0).
//
// Layout: scores are computed transposed, Sᵀ [keys × stacked query rows], so that the softmax of a query row
// is a column and runs vectorized across query rows with no horizontal reductions, and so that no K or V tile
// needs a transposed copy: the query side is packed once per query block (Q, dO as [M × Dp] rows and
// Qᵀ, dOᵀ as [D × Mp]), K_j and V_j are read in place where they are the broadcast (A) operand and copied
// into a contiguous zero-padded [nk × Dp] tile where they are the vector (B) operand.
//   Forward, task = (b, kv head, query block), largest first; per key block j:
//     Sᵀ = scale·K_j·Qᵀ [nk × Mp], masked, m' = max(m, colmax Sᵀ) (epilogue);  Pᵀ = exp(Sᵀ − m');
//     l = l·e^(m−m') + colsum Pᵀ;  O = O·e^(m−m') + (Pᵀ)ᵀ·V_j.   Then out = O / l, lse = m + log l.
//   Backward, task = (b, kv head) (it owns dq of its G heads and dk, dv of its kv head), per query block
//   (Di = rowsum(dO ∘ O)) and key block j:
//     Pᵀ = exp(scale·K_j·Qᵀ − lse) (epilogue);  dV_j += Pᵀ·dO;  dSᵀ = scale·Pᵀ∘(V_j·dOᵀ − Di) (epilogue);
//     dK_j += dSᵀ·Q;  dQ += (dSᵀ)ᵀ·K_j.
// dK, dV accumulate in place (rows of Hkv·D floats) when D is a multiple of W, else in padded tiles that are
// then added. Exactness: fp32 products accumulated over D (scores) or over the tile (P·V, dV, dK, dQ) with
// the running sums in the output, as the OpenBLAS path; exp within 2 ulp.
//
// No #pragma once: included once per instruction set, inside that file's namespace.

template <class V>
constexpr int64_t round_up(int64_t x) {
  return (x + V::W - 1) / V::W * V::W;
}

// Epilogues of the tile products: what becomes of the accumulators x[i] = Σ_p A(i0 + i, p)·B[p, col … col+W)
// of one register column, i < MR, at C rows i0 + i (c points at row i0, column col). C = alpha·x, or C +=
// alpha·x when acc.
template <class V>
struct StoreEpi {
  float alpha;
  bool acc;
  template <int MR>
  void apply(typename V::R* x, int64_t, int64_t, float* c, int64_t ldc) const {
    for (int i = 0; i < MR; ++i) {
      const typename V::R y = V::mul(x[i], V::set1(alpha));
      V::store(c + i * ldc, acc ? V::add(V::load(c + i * ldc), y) : y);
    }
  }
};
// Forward scores Sᵀ = scale·x, −inf where the mask of the column's query row forbids key j0 + i (only on
// boundary tiles), and the running column maximum cmax[col] = max(cmax[col], Sᵀ).
template <class V>
struct ScoreEpi {
  float scale;
  const float *lo, *hi;
  float* cmax;
  int64_t j0;
  bool mask;
  template <int MR>
  void apply(typename V::R* x, int64_t i0, int64_t col, float* c, int64_t ldc) const {
    typename V::R mx = V::load(cmax + col);
    for (int i = 0; i < MR; ++i) {
      typename V::R y = V::mul(x[i], V::set1(scale));
      if (mask)
        y = V::masked(y, V::load(lo + col), V::load(hi + col), V::set1(static_cast<float>(j0 + i0 + i)));
      V::store(c + i * ldc, y);
      mx = V::max(mx, y);
    }
    V::store(cmax + col, mx);
  }
};
// Backward probabilities Pᵀ = exp(scale·x − lse[col]), 0 where the mask of the column's query row forbids key
// j0 + i (only on boundary tiles).
template <class V>
struct ProbEpi {
  float scale;
  const float *lse, *lo, *hi;
  int64_t j0;
  bool mask;
  template <int MR>
  void apply(typename V::R* x, int64_t i0, int64_t col, float* c, int64_t ldc) const {
    for (int i = 0; i < MR; ++i) {
      typename V::R y = V::mul(x[i], V::set1(scale));
      if (mask)
        y = V::masked(y, V::load(lo + col), V::load(hi + col), V::set1(static_cast<float>(j0 + i0 + i)));
      V::store(c + i * ldc, V::exp(V::sub(y, V::load(lse + col))));
    }
  }
};
// Backward dSᵀ = scale · Pᵀ ∘ (x − Di[col]), x = dPᵀ; Pᵀ at the same place of p (leading dimension ldp).
template <class V>
struct DsEpi {
  float scale;
  const float *p, *di;
  int64_t ldp;
  template <int MR>
  void apply(typename V::R* x, int64_t i0, int64_t col, float* c, int64_t ldc) const {
    for (int i = 0; i < MR; ++i) {
      const typename V::R pv = V::load(p + (i0 + i) * ldp + col);
      V::store(c + i * ldc, V::mul(V::mul(pv, V::sub(x[i], V::load(di + col))), V::set1(scale)));
    }
  }
};

// C rows [i0, i0+MR) × columns [j, j + NV·W): epi(Σ_p A(i, p) · B[p, :]), A(i, p) = a[i·ars + p·acs] (a
// points at row i0), B rows ldb apart (b points at column j).
template <class V, int MR, int NV, class Epi>
inline void micro_kernel(int64_t k, const float* a, int64_t ars, int64_t acs, const float* b, int64_t ldb,
                         float* c, int64_t ldc, int64_t i0, int64_t j, const Epi& epi) {
  using R = typename V::R;
  R cr[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) cr[i][v] = V::zero();
  const float* ai[MR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) ai[i] = a + i * ars;
#pragma GCC unroll 4
  for (int64_t p = 0; p < k; ++p) {
    R bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bv[v] = V::load(b + v * V::W);
    b += ldb;
    const int64_t off = p * acs;
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const R x = V::bcast(ai[i] + off);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) cr[i][v] = V::fma(x, bv[v], cr[i][v]);
    }
  }
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    R x[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) x[i] = cr[i][v];
    epi.template apply<MR>(x, i0, j + v * V::W, c + v * V::W, ldc);
  }
}

template <class V, int NV, class Epi>
inline void rows_kernel(int64_t m, int64_t k, const float* a, int64_t ars, int64_t acs, const float* b,
                        int64_t ldb, float* c, int64_t ldc, int64_t j, const Epi& epi) {
  int64_t i = 0;
  for (; i + V::MR <= m; i += V::MR)
    micro_kernel<V, V::MR, NV>(k, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc, i, j, epi);
  const float* ar = a + i * ars;
  float* cr = c + i * ldc;
  switch (m - i) {  // V::MR <= 8
    case 0:
      break;
    case 1:
      micro_kernel<V, 1, NV>(k, ar, ars, acs, b, ldb, cr, ldc, i, j, epi);
      break;
    case 2:
      micro_kernel<V, 2, NV>(k, ar, ars, acs, b, ldb, cr, ldc, i, j, epi);
      break;
    case 3:
      micro_kernel<V, 3, NV>(k, ar, ars, acs, b, ldb, cr, ldc, i, j, epi);
      break;
    case 4:
      micro_kernel<V, 4, NV>(k, ar, ars, acs, b, ldb, cr, ldc, i, j, epi);
      break;
    case 5:
      micro_kernel<V, 5, NV>(k, ar, ars, acs, b, ldb, cr, ldc, i, j, epi);
      break;
    case 6:
      micro_kernel<V, 6, NV>(k, ar, ars, acs, b, ldb, cr, ldc, i, j, epi);
      break;
    default:
      micro_kernel<V, 7, NV>(k, ar, ars, acs, b, ldb, cr, ldc, i, j, epi);
      break;
  }
}

// C [m × n] = epi(A [m × k] · B [k × n]); n a multiple of W (padded tiles).
template <class V, class Epi>
void tile_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t ars, int64_t acs, const float* b,
               int64_t ldb, float* c, int64_t ldc, const Epi& epi) {
  static_assert(V::MR <= 8 && V::NV <= 4);
  for (int64_t j = 0; j < n; j += V::NV * V::W) {
    const int64_t nv = std::min<int64_t>(V::NV, (n - j) / V::W);
    const float* bj = b + j;
    float* cj = c + j;
    if (nv == V::NV)
      rows_kernel<V, V::NV>(m, k, a, ars, acs, bj, ldb, cj, ldc, j, epi);
    else if (nv == 3)
      rows_kernel<V, 3>(m, k, a, ars, acs, bj, ldb, cj, ldc, j, epi);
    else if (nv == 2)
      rows_kernel<V, 2>(m, k, a, ars, acs, bj, ldb, cj, ldc, j, epi);
    else
      rows_kernel<V, 1>(m, k, a, ars, acs, bj, ldb, cj, ldc, j, epi);
  }
}

// Query rows per head in one block: about 256 stacked rows whatever G is.
template <class V>
int64_t query_block(int64_t G) {
  return std::clamp<int64_t>(384 / G, 8, 128);
}
template <class V>
constexpr int64_t key_block() {
  return 144;
}

// The packed query side of one block: rows r = hg·nq + ii (head kvh·G + hg, position i0 + ii).
template <class V>
struct QueryBlock {
  int64_t i0, nq, M, Mp, ld;  // ld: leading dimension of the [· × Mp] tiles
};

// dst [M × Dp] rows (zero-padded columns), optionally dstT [D × Mp] (zero-padded columns) of src's stacked
// rows.
template <class V>
void pack_rows(const AttnGeometry& g, const float* src, int64_t b, int64_t kvh, const QueryBlock<V>& qb,
               int64_t Dp, float* dst, float* dstT) {
  for (int64_t hg = 0; hg < g.G; ++hg)
    for (int64_t ii = 0; ii < qb.nq; ++ii) {
      const int64_t r = hg * qb.nq + ii;
      const float* s = src + g.q_off(b, qb.i0 + ii, kvh * g.G + hg);
      if (dst != nullptr) {
        float* d = dst + r * Dp;
        for (int64_t c = 0; c < g.D; ++c) d[c] = s[c];
        for (int64_t c = g.D; c < Dp; ++c) d[c] = 0.0f;
      }
      if (dstT != nullptr)
        for (int64_t c = 0; c < g.D; ++c) dstT[c * qb.ld + r] = s[c];
    }
  if (dstT != nullptr)
    for (int64_t c = 0; c < g.D; ++c)
      for (int64_t r = qb.M; r < qb.Mp; ++r) dstT[c * qb.ld + r] = 0.0f;
}

// Allowed keys [lo, hi] of every stacked row (as floats: exact below 2^24), padded rows allow everything.
template <class V>
void row_ranges(const AttnGeometry& g, int64_t kvh, const QueryBlock<V>& qb, float* lo, float* hi) {
  for (int64_t hg = 0; hg < g.G; ++hg) {
    const AttentionMask m = g.head_mask(kvh, hg);
    for (int64_t ii = 0; ii < qb.nq; ++ii) {
      lo[hg * qb.nq + ii] = static_cast<float>(m.first_key(qb.i0 + ii));
      hi[hg * qb.nq + ii] = static_cast<float>(m.last_key(qb.i0 + ii));
    }
  }
  for (int64_t r = qb.M; r < qb.Mp; ++r) {
    lo[r] = 0.0f;
    hi[r] = 3.0e38f;
  }
}

// K_j or V_j [nk × D] (rows ld apart) into a zero-padded [nk × Dp] tile.
template <class V>
void pack_kv(const float* src, int64_t ld, int64_t nk, int64_t D, int64_t Dp, float* dst) {
  for (int64_t j = 0; j < nk; ++j) {
    for (int64_t c = 0; c < D; ++c) dst[j * Dp + c] = src[j * ld + c];
    for (int64_t c = D; c < Dp; ++c) dst[j * Dp + c] = 0.0f;
  }
}

// Asks for the nk rows of D floats (ld apart) of the next K and V blocks to be brought into L2 while this
// block computes: the kv rows are 1 KiB apart and come from L3 or memory, and each query block streams them
// all again.
template <class V>
void prefetch_rows(const float* k, const float* v, int64_t ld, int64_t nk, int64_t D) {
  for (int64_t j = 0; j < nk; ++j)
    for (int64_t c = 0; c < D; c += 16) {
      __builtin_prefetch(k + j * ld + c, 0, 2);
      __builtin_prefetch(v + j * ld + c, 0, 2);
    }
}

template <class V>
void forward(const AttnGeometry& g, const float* q, const float* k, const float* v, float* out, float* lse) {
  using R = typename V::R;
  const int64_t W = V::W, nqb = query_block<V>(g.G), N = key_block<V>(), Dp = round_up<V>(g.D);
  // Leading dimension of the [· × Mp] tiles one vector more than Mp: a power of two (1 KiB rows) would map
  // the rows of a tile to a few L1 sets.
  const int64_t Mmax = g.G * nqb, Mpmax = round_up<V>(Mmax), ldm = Mpmax + W;
  const int64_t nblocks = (g.S + nqb - 1) / nqb, tasks = g.B * g.Hkv * nblocks;
#pragma omp parallel
  {
    // Per-thread scratch, allocated once per call: Qᵀ, Sᵀ/Pᵀ, O, padded K/V tiles, per-row state.
    std::vector<float> qt(static_cast<size_t>(g.D * ldm)), st(static_cast<size_t>(N * ldm)),
        ot(static_cast<size_t>(Mmax * Dp)), vp(static_cast<size_t>(N * Dp)),
        state(static_cast<size_t>(6 * Mpmax));
    float *lo = state.data(), *hi = lo + Mpmax, *m = hi + Mpmax, *l = m + Mpmax, *cm = l + Mpmax,
          *al = cm + Mpmax;
    // Later query blocks see more keys under a causal mask: hand them out first for a better balance.
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t blk = nblocks - 1 - task % nblocks, kvh = (task / nblocks) % g.Hkv,
                    b = task / (nblocks * g.Hkv);
      QueryBlock<V> qb{blk * nqb, std::min(nqb, g.S - blk * nqb), 0, 0, ldm};
      qb.M = g.G * qb.nq;
      qb.Mp = round_up<V>(qb.M);
      const int64_t Mp = qb.Mp;
      pack_rows<V>(g, q, b, kvh, qb, Dp, nullptr, qt.data());
      row_ranges<V>(g, kvh, qb, lo, hi);
      for (int64_t r = 0; r < Mp; ++r) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
      }
      std::fill_n(ot.data(), qb.M * Dp, 0.0f);
      int64_t jlo, jhi;
      g.key_range(kvh, qb.i0, qb.nq, jlo, jhi);
      for (int64_t j0 = jlo; j0 <= jhi; j0 += N) {
        const int64_t nk = std::min(N, jhi + 1 - j0);
        if (!g.tile_any(kvh, qb.i0, qb.nq, j0, nk)) continue;
        const bool all = g.tile_all(kvh, qb.i0, qb.nq, j0, nk);
        if (j0 + N <= jhi)
          prefetch_rows<V>(k + g.kv_off(b, j0 + N, kvh), v + g.kv_off(b, j0 + N, kvh), g.kv_stride(),
                           std::min(N, jhi + 1 - j0 - N), g.D);
        // K_j is read in place (rows of the A operand), V_j copied into a contiguous zero-padded tile (B
        // operand)
        const float* kb = k + g.kv_off(b, j0, kvh);
        pack_kv<V>(v + g.kv_off(b, j0, kvh), g.kv_stride(), nk, g.D, Dp, vp.data());
        float* s = st.data();
        // Sᵀ [nk × Mp] = scale · K_j · Qᵀ, masked; cm = max(m, column max)
        std::copy_n(m, Mp, cm);
        tile_gemm<V>(nk, Mp, g.D, kb, g.kv_stride(), 1, qt.data(), ldm, s, ldm,
                     ScoreEpi<V>{g.scale, lo, hi, cm, j0, !all});
        // online softmax, column-wise (one column per query row)
        for (int64_t c = 0; c < Mp; c += W) {
          const R mx = V::load(cm + c);
          const R u = V::nz(mx);  // −inf (nothing visible yet) → 0, so exp(−inf − u) = 0
          R sum = V::zero();
          for (int64_t j = 0; j < nk; ++j) {
            const R e = V::exp(V::sub(V::load(s + j * ldm + c), u));
            V::store(s + j * ldm + c, e);
            sum = V::add(sum, e);
          }
          const R alpha = V::exp(V::sub(V::load(m + c), u));  // 0 when m was −inf
          V::store(l + c, V::fma(V::load(l + c), alpha, sum));
          V::store(m + c, mx);
          V::store(al + c, alpha);
        }
        for (int64_t r = 0; r < qb.M; ++r)
          if (al[r] != 1.0f) {
            float* o = ot.data() + r * Dp;
            const R a = V::set1(al[r]);
            for (int64_t c = 0; c < Dp; c += W) V::store(o + c, V::mul(V::load(o + c), a));
          }
        // O [M × Dp] += (Pᵀ)ᵀ · V_j
        tile_gemm<V>(qb.M, Dp, nk, s, 1, ldm, vp.data(), Dp, ot.data(), Dp, StoreEpi<V>{1.0f, true});
      }
      for (int64_t hg = 0; hg < g.G; ++hg) {
        const int64_t h = kvh * g.G + hg;
        for (int64_t ii = 0; ii < qb.nq; ++ii) {
          const int64_t r = hg * qb.nq + ii;
          const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
          const float* o = ot.data() + r * Dp;
          float* dst = out + g.q_off(b, qb.i0 + ii, h);
          for (int64_t c = 0; c < g.D; ++c) dst[c] = o[c] * inv;
          lse[(b * g.H + h) * g.S + qb.i0 + ii] = l[r] > 0.0f ? m[r] + std::log(l[r]) : -INFINITY;
        }
      }
    }
  }
}

template <class V>
void backward(const AttnGeometry& g, const float* dout, const float* q, const float* k, const float* v,
              const float* out, const float* lse, float* dq, float* dk, float* dv) {
  const int64_t W = V::W, nqb = query_block<V>(g.G), N = key_block<V>(), Dp = round_up<V>(g.D);
  const int64_t Mmax = g.G * nqb, Mpmax = round_up<V>(Mmax), ldm = Mpmax + W;  // ldm: see forward
  const bool direct = g.D % W == 0;  // dK, dV accumulated in place (else in padded tiles, then added)
  const int64_t tasks = g.B * g.Hkv;
#pragma omp parallel
  {
    std::vector<float> qtile(static_cast<size_t>(Mmax * Dp)), dotile(static_cast<size_t>(Mmax * Dp)),
        qt(static_cast<size_t>(g.D * ldm)), dot(static_cast<size_t>(g.D * ldm)),
        st(static_cast<size_t>(N * ldm)), dpt(static_cast<size_t>(N * ldm)),
        dqt(static_cast<size_t>(Mmax * Dp)), kvp(static_cast<size_t>(3 * N * Dp)),
        state(static_cast<size_t>(4 * Mpmax));
    float *lo = state.data(), *hi = lo + Mpmax, *lse_t = hi + Mpmax, *di = lse_t + Mpmax;
    float *kp = kvp.data(), *dkp = kp + N * Dp, *dvp = dkp + N * Dp;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t kvh = task % g.Hkv, b = task / g.Hkv;
      for (int64_t j = 0; j < g.S; ++j) {  // dk, dv of this kv head: accumulated below, from zero
        std::fill_n(dk + g.kv_off(b, j, kvh), g.D, 0.0f);
        std::fill_n(dv + g.kv_off(b, j, kvh), g.D, 0.0f);
      }
      for (int64_t i0 = 0; i0 < g.S; i0 += nqb) {
        QueryBlock<V> qb{i0, std::min(nqb, g.S - i0), 0, 0, ldm};
        qb.M = g.G * qb.nq;
        qb.Mp = round_up<V>(qb.M);
        const int64_t M = qb.M, Mp = qb.Mp;
        pack_rows<V>(g, q, b, kvh, qb, Dp, qtile.data(), qt.data());
        pack_rows<V>(g, dout, b, kvh, qb, Dp, dotile.data(), dot.data());
        row_ranges<V>(g, kvh, qb, lo, hi);
        for (int64_t hg = 0; hg < g.G; ++hg)
          for (int64_t ii = 0; ii < qb.nq; ++ii) {
            const int64_t r = hg * qb.nq + ii, h = kvh * g.G + hg;
            lse_t[r] = lse[(b * g.H + h) * g.S + i0 + ii];
            const float* orow = out + g.q_off(b, i0 + ii, h);
            const float* drow = dotile.data() + r * Dp;
            float sum = 0.0f;  // Di = rowsum(dO ∘ O)
            for (int64_t c = 0; c < g.D; ++c) sum += drow[c] * orow[c];
            di[r] = sum;
          }
        for (int64_t r = M; r < Mp; ++r) lse_t[r] = di[r] = 0.0f;
        std::fill_n(dqt.data(), M * Dp, 0.0f);
        int64_t jlo, jhi;
        g.key_range(kvh, i0, qb.nq, jlo, jhi);
        for (int64_t j0 = jlo; j0 <= jhi; j0 += N) {
          const int64_t nk = std::min(N, jhi + 1 - j0);
          if (!g.tile_any(kvh, i0, qb.nq, j0, nk)) continue;
          const bool all = g.tile_all(kvh, i0, qb.nq, j0, nk);
          if (j0 + N <= jhi)
            prefetch_rows<V>(k + g.kv_off(b, j0 + N, kvh), v + g.kv_off(b, j0 + N, kvh), g.kv_stride(),
                             std::min(N, jhi + 1 - j0 - N), g.D);
          // K_j, V_j are read in place as A operands; K_j is copied into a contiguous zero-padded tile for dQ
          // (B)
          const int64_t ld = g.kv_stride(), ldd = direct ? ld : Dp;
          const float *kb = k + g.kv_off(b, j0, kvh), *vb = v + g.kv_off(b, j0, kvh);
          float *dkb = direct ? dk + g.kv_off(b, j0, kvh) : dkp,
                *dvb = direct ? dv + g.kv_off(b, j0, kvh) : dvp;
          pack_kv<V>(kb, ld, nk, g.D, Dp, kp);
          float *s = st.data(), *dp = dpt.data();
          // Pᵀ [nk × Mp] = exp(scale · K_j · Qᵀ − lse), 0 where masked
          tile_gemm<V>(nk, Mp, g.D, kb, ld, 1, qt.data(), ldm, s, ldm,
                       ProbEpi<V>{g.scale, lse_t, lo, hi, j0, !all});
          // dV_j [nk × Dp] += Pᵀ · dO
          tile_gemm<V>(nk, Dp, M, s, ldm, 1, dotile.data(), Dp, dvb, ldd, StoreEpi<V>{1.0f, direct});
          // dSᵀ [nk × Mp] = scale · Pᵀ ∘ (V_j · dOᵀ − Di)
          tile_gemm<V>(nk, Mp, g.D, vb, ld, 1, dot.data(), ldm, dp, ldm, DsEpi<V>{g.scale, s, di, ldm});
          // dK_j [nk × Dp] += dSᵀ · Q
          tile_gemm<V>(nk, Dp, M, dp, ldm, 1, qtile.data(), Dp, dkb, ldd, StoreEpi<V>{1.0f, direct});
          // dQ [M × Dp] += (dSᵀ)ᵀ · K_j
          tile_gemm<V>(M, Dp, nk, dp, 1, ldm, kp, Dp, dqt.data(), Dp, StoreEpi<V>{1.0f, true});
          if (!direct)
            for (int64_t j = 0; j < nk; ++j)
              for (int64_t c = 0; c < g.D; ++c) {
                dk[g.kv_off(b, j0 + j, kvh) + c] += dkp[j * Dp + c];
                dv[g.kv_off(b, j0 + j, kvh) + c] += dvp[j * Dp + c];
              }
        }
        for (int64_t hg = 0; hg < g.G; ++hg)
          for (int64_t ii = 0; ii < qb.nq; ++ii) {
            const float* src = dqt.data() + (hg * qb.nq + ii) * Dp;
            float* dst = dq + g.q_off(b, i0 + ii, kvh * g.G + hg);
            for (int64_t c = 0; c < g.D; ++c) dst[c] = src[c];
          }
      }
    }
  }
}
