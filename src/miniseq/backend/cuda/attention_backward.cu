// Attention backward, flash-style and deterministic: no atomics, every output element has one owner block.
// Three kernels (q, out, dout, dq [B,S,H,D]; k, v, dk, dv [B,S,Hkv,D]; lse [B,H,S]; all bf16 but lse):
//   1. Di = rowsum(dO ∘ O) per (b, h, query), fp32, into backend scratch.
//   2. dK, dV: block = (key tile of 64, kv head, b), 4 warps × 16 keys. It loops over the G query heads of
//      its kv head and, per query head, over the query tiles (32 rows) that can see its keys under that head's
//      mask (S²-Attn: shifted or not), recomputing P from lse:
//        Sᵀ = K·Qᵀ,  Pᵀ = 2^(Sᵀ·scale·log2 e − lse·log2 e),  dV += Pᵀ·dO,  dPᵀ = V·dOᵀ,
//        dSᵀ = Pᵀ ∘ (dPᵀ − Di)·scale,  dK += dSᵀ·Q.
//      So the sum over query tiles and over the query group is in a fixed order, in registers.
//   3. dQ: block = (query tile of 64, head, b), 4 warps × 16 queries, looping over key tiles:
//        S = Q·Kᵀ, P, dP = dO·Vᵀ, dS = P ∘ (dP − Di)·scale, dQ += dS·K.
// Splitting dQ from dK/dV costs one more recomputation of S and dP (7 instead of 5 tile products) and buys
// determinism without atomics or a dQ accumulation buffer.
#include "miniseq/backend/cuda/attention_common.cuh"
#include "miniseq/backend/cuda/cuda_ops.h"

namespace miniseq::cuda {

namespace attn {
namespace {

constexpr int kThreads = 128;
constexpr int kKeyTile = 64, kQTileKV = 32;  // dK/dV kernel: keys per block, queries per inner tile
constexpr int kQTile = 64, kKTileQ = 64;     // dQ kernel: queries per block, keys per inner tile

// One warp per (b, h, i) row: Di = Σ_d dO·O.
template <int D>
__global__ void delta_kernel(const bf16* dout, const bf16* out, float* delta, int64_t B, int64_t S,
                             int64_t H) {
  const int64_t r = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;  // (b·S + i)·H + h
  const int lane = threadIdx.x % 32;
  if (r >= B * S * H) return;
  float s = 0.0f;
  for (int c = lane; c < D; c += 32)
    s += __bfloat162float(dout[r * D + c]) * __bfloat162float(out[r * D + c]);
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  const int64_t h = r % H, bi = r / H, i = bi % S, b = bi / S;
  if (lane == 0) delta[(b * H + h) * S + i] = s;
}

// First i in [0, S) with last_key(i) >= j (S if none), and last i with first_key(i) <= j (-1 if none): both
// ends of the mask are non-decreasing in i (ops/attention_mask.h), so binary searches find the query range of
// a key tile from the mask's own two functions.
__device__ int64_t first_query_seeing(const DeviceMask& m, int64_t j) {
  int64_t lo = 0, hi = m.queries;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (m.last_key(mid) >= j)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}
__device__ int64_t last_query_seeing(const DeviceMask& m, int64_t j) {
  int64_t lo = -1, hi = m.queries - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (m.first_key(mid) <= j)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

template <int D>
__global__ void __launch_bounds__(kThreads)
    dkdv_kernel(const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse,
                const float* delta, bf16* dk, bf16* dv, Geometry geo) {
  constexpr int kLd = D + kPad, kNt = kQTileKV / 8, kDt = D / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Ks = reinterpret_cast<bf16*>(smem_raw);
  bf16* Vs = Ks + kKeyTile * kLd;
  bf16* Qs = Vs + kKeyTile * kLd;
  bf16* dOs = Qs + kQTileKV * kLd;
  float* lse2_s = reinterpret_cast<float*>(dOs + kQTileKV * kLd);
  float* di_s = lse2_s + kQTileKV;
  const int64_t S = geo.S, b = blockIdx.z, kvh = blockIdx.y;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kKeyTile, nk = min64(kKeyTile, S - j0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int k0 = warp * 16;  // this warp's keys within the tile

  load_rows<D>(Ks, k, b, j0, kKeyTile, S, geo.Hkv, kvh);
  load_rows<D>(Vs, v, b, j0, kKeyTile, S, geo.Hkv, kvh);
  float dk_acc[kDt][4], dv_acc[kDt][4];
#pragma unroll
  for (int dt = 0; dt < kDt; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk_acc[dt][e] = dv_acc[dt][e] = 0.0f;
  const int64_t key[2] = {j0 + k0 + g, j0 + k0 + g + 8};

  for (int64_t hg = 0; hg < geo.G; ++hg) {
    const int64_t h = kvh * geo.G + hg;
    // Each query head has its own mask (S²-Attn: the query heads of one kv head may be shifted or not), so its
    // own query range; the dK/dV sums over all of them stay in these registers.
    const DeviceMask mask = geo.mask.for_head(h, geo.H);
    const int64_t ilo = first_query_seeing(mask, j0), ihi = last_query_seeing(mask, j0 + nk - 1);
    for (int64_t i0 = ilo; i0 <= ihi; i0 += kQTileKV) {
      const int64_t nq = min64(kQTileKV, S - i0);
      if (!mask.tile_any(i0, i0 + nq, j0, j0 + nk)) continue;
      __syncthreads();  // the previous query tile is no longer read
      load_rows<D>(Qs, q, b, i0, kQTileKV, S, geo.H, h);
      load_rows<D>(dOs, dout, b, i0, kQTileKV, S, geo.H, h);
      for (int r = threadIdx.x; r < kQTileKV; r += blockDim.x) {
        const int64_t i = i0 + r;
        // Rows past S: lse = +inf makes P = 0. Fully masked rows (lse = −inf) are handled below.
        lse2_s[r] = i < S ? lse[(b * geo.H + h) * S + i] * kLog2e : INFINITY;
        di_s[r] = i < S ? delta[(b * geo.H + h) * S + i] : 0.0f;
      }
      __syncthreads();
      const bool full = nq == kQTileKV && nk == kKeyTile && mask.tile_all(i0, i0 + nq, j0, j0 + nk);

      // Sᵀ [16 keys × 32 queries] = K·Qᵀ, then Pᵀ.
      float p[kNt][4];
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt) p[nt][0] = p[nt][1] = p[nt][2] = p[nt][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t a[4];
        load_a(a, Ks, kLd, k0, kk * 16, g, t);
#pragma unroll
        for (int nt = 0; nt < kNt; ++nt) {
          uint32_t bb[2];
          load_b_trans(bb, Qs, kLd, nt * 8, kk * 16, g, t);
          mma_16816(p[nt], a, bb);
        }
      }
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int qc = nt * 8 + 2 * t + (e % 2);
          const float l2 = lse2_s[qc];
          const bool ok = full || mask.allowed(i0 + qc, key[e / 2]);
          p[nt][e] = (ok && l2 != -INFINITY) ? exp2f(p[nt][e] * geo.scale_log2 - l2) : 0.0f;
        }
        // dV += Pᵀ·dO  (k = queries)
#pragma unroll
      for (int kk = 0; kk < kQTileKV / 16; ++kk) {
        uint32_t a[4];
        a[0] = pack_bf16(p[2 * kk][0], p[2 * kk][1]);
        a[1] = pack_bf16(p[2 * kk][2], p[2 * kk][3]);
        a[2] = pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]);
        a[3] = pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3]);
#pragma unroll
        for (int dt = 0; dt < kDt; ++dt) {
          uint32_t bb[2];
          load_b(bb, dOs, kLd, kk * 16, dt * 8, g, t);
          mma_16816(dv_acc[dt], a, bb);
        }
      }
      // dPᵀ [16 keys × 32 queries] = V·dOᵀ, then dSᵀ = Pᵀ ∘ (dPᵀ − Di)·scale.
      float ds[kNt][4];
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt) ds[nt][0] = ds[nt][1] = ds[nt][2] = ds[nt][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t a[4];
        load_a(a, Vs, kLd, k0, kk * 16, g, t);
#pragma unroll
        for (int nt = 0; nt < kNt; ++nt) {
          uint32_t bb[2];
          load_b_trans(bb, dOs, kLd, nt * 8, kk * 16, g, t);
          mma_16816(ds[nt], a, bb);
        }
      }
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int qc = nt * 8 + 2 * t + (e % 2);
          ds[nt][e] = p[nt][e] * (ds[nt][e] - di_s[qc]) * geo.scale;
        }
        // dK += dSᵀ·Q  (k = queries)
#pragma unroll
      for (int kk = 0; kk < kQTileKV / 16; ++kk) {
        uint32_t a[4];
        a[0] = pack_bf16(ds[2 * kk][0], ds[2 * kk][1]);
        a[1] = pack_bf16(ds[2 * kk][2], ds[2 * kk][3]);
        a[2] = pack_bf16(ds[2 * kk + 1][0], ds[2 * kk + 1][1]);
        a[3] = pack_bf16(ds[2 * kk + 1][2], ds[2 * kk + 1][3]);
#pragma unroll
        for (int dt = 0; dt < kDt; ++dt) {
          uint32_t bb[2];
          load_b(bb, Qs, kLd, kk * 16, dt * 8, g, t);
          mma_16816(dk_acc[dt], a, bb);
        }
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int64_t j = key[rr];
    if (j >= S) continue;
    bf16* dkr = dk + ((b * S + j) * geo.Hkv + kvh) * D;
    bf16* dvr = dv + ((b * S + j) * geo.Hkv + kvh) * D;
#pragma unroll
    for (int dt = 0; dt < kDt; ++dt) {
      *reinterpret_cast<uint32_t*>(dkr + dt * 8 + 2 * t) =
          pack_bf16(dk_acc[dt][2 * rr], dk_acc[dt][2 * rr + 1]);
      *reinterpret_cast<uint32_t*>(dvr + dt * 8 + 2 * t) =
          pack_bf16(dv_acc[dt][2 * rr], dv_acc[dt][2 * rr + 1]);
    }
  }
}

template <int D>
__global__ void __launch_bounds__(kThreads)
    dq_kernel(const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse,
              const float* delta, bf16* dq, Geometry geo) {
  constexpr int kLd = D + kPad, kNt = kKTileQ / 8, kDt = D / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* dOs = Qs + kQTile * kLd;
  bf16* Ks = dOs + kQTile * kLd;
  bf16* Vs = Ks + kKTileQ * kLd;
  const int64_t S = geo.S, b = blockIdx.z, h = blockIdx.y, kvh = h / geo.G;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kQTile, nq = min64(kQTile, S - i0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int m0 = warp * 16;
  const DeviceMask mask = geo.mask.for_head(h, geo.H);

  load_rows<D>(Qs, q, b, i0, kQTile, S, geo.H, h);
  load_rows<D>(dOs, dout, b, i0, kQTile, S, geo.H, h);
  const int64_t row[2] = {i0 + m0 + g, i0 + m0 + g + 8};
  float l2[2], di[2];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const bool in = row[rr] < S;
    l2[rr] = in ? lse[(b * geo.H + h) * S + row[rr]] * kLog2e : INFINITY;
    di[rr] = in ? delta[(b * geo.H + h) * S + row[rr]] : 0.0f;
  }
  float dq_acc[kDt][4];
#pragma unroll
  for (int dt = 0; dt < kDt; ++dt) dq_acc[dt][0] = dq_acc[dt][1] = dq_acc[dt][2] = dq_acc[dt][3] = 0.0f;

  const int64_t jlo = mask.first_key(i0), jhi = mask.last_key(i0 + nq - 1);
  for (int64_t j0 = jlo; j0 <= jhi; j0 += kKTileQ) {
    const int64_t nk = min64(kKTileQ, jhi + 1 - j0);
    if (!mask.tile_any(i0, i0 + nq, j0, j0 + nk)) continue;
    __syncthreads();
    load_rows<D>(Ks, k, b, j0, kKTileQ, S, geo.Hkv, kvh);
    load_rows<D>(Vs, v, b, j0, kKTileQ, S, geo.Hkv, kvh);
    __syncthreads();
    const bool full = nq == kQTile && nk == kKTileQ && mask.tile_all(i0, i0 + nq, j0, j0 + nk);

    float p[kNt][4], ds[kNt][4];
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) p[nt][e] = ds[nt][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t a[4], ad[4];
      load_a(a, Qs, kLd, m0, kk * 16, g, t);
      load_a(ad, dOs, kLd, m0, kk * 16, g, t);
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt) {
        uint32_t bb[2];
        load_b_trans(bb, Ks, kLd, nt * 8, kk * 16, g, t);
        mma_16816(p[nt], a, bb);  // S = Q·Kᵀ
        load_b_trans(bb, Vs, kLd, nt * 8, kk * 16, g, t);
        mma_16816(ds[nt], ad, bb);  // dP = dO·Vᵀ
      }
    }
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int rr = e / 2;
        const bool ok = full || mask.allowed(row[rr], j0 + nt * 8 + 2 * t + (e % 2));
        const float pe = (ok && l2[rr] != -INFINITY) ? exp2f(p[nt][e] * geo.scale_log2 - l2[rr]) : 0.0f;
        ds[nt][e] = pe * (ds[nt][e] - di[rr]) * geo.scale;
      }
      // dQ += dS·K  (k = keys)
#pragma unroll
    for (int kk = 0; kk < kKTileQ / 16; ++kk) {
      uint32_t a[4];
      a[0] = pack_bf16(ds[2 * kk][0], ds[2 * kk][1]);
      a[1] = pack_bf16(ds[2 * kk][2], ds[2 * kk][3]);
      a[2] = pack_bf16(ds[2 * kk + 1][0], ds[2 * kk + 1][1]);
      a[3] = pack_bf16(ds[2 * kk + 1][2], ds[2 * kk + 1][3]);
#pragma unroll
      for (int dt = 0; dt < kDt; ++dt) {
        uint32_t bb[2];
        load_b(bb, Ks, kLd, kk * 16, dt * 8, g, t);
        mma_16816(dq_acc[dt], a, bb);
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    if (row[rr] >= S) continue;
    bf16* dst = dq + ((b * S + row[rr]) * geo.H + h) * D;
#pragma unroll
    for (int dt = 0; dt < kDt; ++dt)
      *reinterpret_cast<uint32_t*>(dst + dt * 8 + 2 * t) =
          pack_bf16(dq_acc[dt][2 * rr], dq_acc[dt][2 * rr + 1]);
  }
}

template <int D>
void launch_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                     const Tensor& lse, const Tensor& dq, const Tensor& dk, const Tensor& dv,
                     const Geometry& g, float* delta) {
  constexpr int kLd = D + kPad;
  const int64_t rows = g.B * g.S * g.H;
  delta_kernel<D><<<grid_for(rows * 32, 256, 1LL << 30), 256>>>(
      static_cast<const bf16*>(dout.data), static_cast<const bf16*>(out.data), delta, g.B, g.S, g.H);
  MS_CUDA_LAUNCH_CHECK();

  const size_t smem_kv =
      static_cast<size_t>(2 * kKeyTile + 2 * kQTileKV) * kLd * sizeof(bf16) + 2 * kQTileKV * sizeof(float);
  MS_CUDA_CHECK(cudaFuncSetAttribute(dkdv_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(smem_kv)));
  const dim3 grid_kv(static_cast<unsigned>((g.S + kKeyTile - 1) / kKeyTile), static_cast<unsigned>(g.Hkv),
                     static_cast<unsigned>(g.B));
  dkdv_kernel<D><<<grid_kv, kThreads, smem_kv>>>(
      static_cast<const bf16*>(q.data), static_cast<const bf16*>(k.data), static_cast<const bf16*>(v.data),
      static_cast<const bf16*>(dout.data), static_cast<const float*>(lse.data), delta,
      static_cast<bf16*>(dk.data), static_cast<bf16*>(dv.data), g);
  MS_CUDA_LAUNCH_CHECK();

  const size_t smem_q = static_cast<size_t>(2 * kQTile + 2 * kKTileQ) * kLd * sizeof(bf16);
  MS_CUDA_CHECK(cudaFuncSetAttribute(dq_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(smem_q)));
  const dim3 grid_q(static_cast<unsigned>((g.S + kQTile - 1) / kQTile), static_cast<unsigned>(g.H),
                    static_cast<unsigned>(g.B));
  dq_kernel<D><<<grid_q, kThreads, smem_q>>>(
      static_cast<const bf16*>(q.data), static_cast<const bf16*>(k.data), static_cast<const bf16*>(v.data),
      static_cast<const bf16*>(dout.data), static_cast<const float*>(lse.data), delta,
      static_cast<bf16*>(dq.data), g);
  MS_CUDA_LAUNCH_CHECK();
}

}  // namespace
}  // namespace attn

void CudaBackend::attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                     const Tensor& out, const Tensor& lse, const Tensor& dq, const Tensor& dk,
                                     const Tensor& dv, const AttentionParams& p) {
  const attn::Geometry g = attn::geometry(q, k, p);
  MS_CHECK(p.q_offset == 0 && g.Sk == g.S, "CUDA attention backward: queries and keys must be the same positions");
  MS_DASSERT(v.shape == k.shape && out.shape == q.shape && dout.shape == q.shape && dq.shape == q.shape &&
             dk.shape == k.shape && dv.shape == k.shape && lse.numel() == g.B * g.H * g.S);
  for (auto [t, name] : {std::pair<const Tensor*, const char*>{&dout, "dout"},
                         {&q, "q"},
                         {&k, "k"},
                         {&v, "v"},
                         {&out, "out"},
                         {&dq, "dq"},
                         {&dk, "dk"},
                         {&dv, "dv"}})
    attn::check_tensor(*t, name);
  if (g.S == 0) return;
  auto* delta = static_cast<float*>(scratch(kRowTerms, static_cast<size_t>(g.B * g.H * g.S) * sizeof(float)));
  switch (q.size(3)) {
    case 16:
      attn::launch_backward<16>(dout, q, k, v, out, lse, dq, dk, dv, g, delta);
      break;
    case 32:
      attn::launch_backward<32>(dout, q, k, v, out, lse, dq, dk, dv, g, delta);
      break;
    case 64:
      attn::launch_backward<64>(dout, q, k, v, out, lse, dq, dk, dv, g, delta);
      break;
    case 96:
      attn::launch_backward<96>(dout, q, k, v, out, lse, dq, dk, dv, g, delta);
      break;
    case 128:
      attn::launch_backward<128>(dout, q, k, v, out, lse, dq, dk, dv, g, delta);
      break;
    default:
      fail("CUDA attention: head_dim ", q.size(3), " is not supported (16, 32, 64, 96 or 128)");
  }
}

}  // namespace miniseq::cuda
