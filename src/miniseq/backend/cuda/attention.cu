// Attention forward, flash-style (FlashAttention-2 algorithm) on bf16 tensor cores: q [B,S,H,D], k, v
// [B,S,Hkv,D] -> out [B,S,H,D] (bf16), lse [B,H,S] (fp32, natural log of Σ exp of the scaled scores).
//
// Block = (query tile of 64 rows, head h, batch b); 4 warps, each owns 16 query rows for the whole pass. GQA:
// head h reads kv head h / G. For each key tile of 64 keys in the range of head h's mask (ops/attention_mask.h:
// causal, sliding window, and with S²-Attn the group of head h, shifted or not; tiles with no allowed pair are
// skipped, tiles partly allowed are masked per element):
//   S = Q·Kᵀ (scale·log2 e folded in), m' = max(m, rowmax S), P = 2^(S − m'), l = l·2^(m − m') + ΣP,
//   O = O·2^(m − m') + P·V   with P rounded to bf16 for the MMA (l sums the fp32 P), all in registers.
// Then out = O / l and lse = (m + log2 l)·ln 2. The backward (attention_backward.cu) recomputes P from lse.
// D is a template parameter (16, 32, 64, 96, 128): the O accumulators are D/8 fragments per warp.
#include "miniseq/backend/cuda/attention_common.cuh"
#include "miniseq/backend/cuda/cuda_ops.h"

namespace miniseq::cuda {

namespace attn {

constexpr int kBr = 64, kBc = 64, kThreads = 128;

template <int D>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const bf16* q, const bf16* k, const bf16* v, bf16* out, float* lse, Geometry geo) {
  constexpr int kLd = D + kPad, kNt = kBc / 8, kDt = D / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* Ks = Qs + kBr * kLd;
  bf16* Vs = Ks + kBc * kLd;
  const int64_t S = geo.S, b = blockIdx.z, h = blockIdx.y, kvh = h / geo.G;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kBr;
  const int64_t nq = min64(kBr, S - i0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int m0 = warp * 16;
  const DeviceMask mask = geo.mask.for_head(h, geo.H);  // S²-Attn: the shifted half of the heads

  load_rows<D>(Qs, q, b, i0, kBr, S, geo.H, h);

  float o[kDt][4];
#pragma unroll
  for (int dt = 0; dt < kDt; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
  const int64_t row[2] = {i0 + m0 + g, i0 + m0 + g + 8};

  const int64_t jlo = mask.first_key(i0), jhi = mask.last_key(i0 + nq - 1);
  for (int64_t j0 = jlo; j0 <= jhi; j0 += kBc) {
    const int64_t nk = min64(kBc, jhi + 1 - j0);
    if (!mask.tile_any(i0, i0 + nq, j0, j0 + nk)) continue;
    __syncthreads();  // the previous tile's K/V are no longer read (and Q is loaded, on the first pass)
    load_rows<D>(Ks, k, b, j0, kBc, geo.Sk, geo.Hkv, kvh);
    load_rows<D>(Vs, v, b, j0, kBc, geo.Sk, geo.Hkv, kvh);
    __syncthreads();

    float s[kNt][4];
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t a[4];
      load_a(a, Qs, kLd, m0, kk * 16, g, t);
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt) {
        uint32_t bb[2];
        load_b_trans(bb, Ks, kLd, nt * 8, kk * 16, g, t);
        mma_16816(s[nt], a, bb);
      }
    }
    const bool full = nq == kBr && nk == kBc && mask.tile_all(i0, i0 + nq, j0, j0 + nk);
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[nt][e] * geo.scale_log2;
        if (!full && !mask.allowed(row[e / 2], j0 + nt * 8 + 2 * t + (e % 2))) x = -INFINITY;
        s[nt][e] = x;
      }
    // Online softmax per row (e/2 = 0: row g, 1: row g + 8), reductions over the quad.
    float alpha[2];
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * rr], s[nt][2 * rr + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m_run[rr], mx);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // nothing visible yet: P = 0, alpha = 1
      alpha[rr] = exp2f(m_run[rr] - m_use);
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt) {
        s[nt][2 * rr] = exp2f(s[nt][2 * rr] - m_use);
        s[nt][2 * rr + 1] = exp2f(s[nt][2 * rr + 1] - m_use);
        sum += s[nt][2 * rr] + s[nt][2 * rr + 1];
      }
      l_run[rr] = l_run[rr] * alpha[rr] + sum;  // per-thread partial; the quad is summed at the end
      m_run[rr] = m_new;
    }
#pragma unroll
    for (int dt = 0; dt < kDt; ++dt) {
      o[dt][0] *= alpha[0], o[dt][1] *= alpha[0];
      o[dt][2] *= alpha[1], o[dt][3] *= alpha[1];
    }
    // O += P·V, P from the score registers.
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk) {
      uint32_t a[4];
      a[0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
      a[1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
      a[2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      a[3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int dt = 0; dt < kDt; ++dt) {
        uint32_t bb[2];
        load_b(bb, Vs, kLd, kk * 16, dt * 8, g, t);
        mma_16816(o[dt], a, bb);
      }
    }
  }

#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    float l = l_run[rr];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int64_t i = row[rr];
    if (i >= S) continue;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    bf16* dst = out + ((b * S + i) * geo.H + h) * D;
#pragma unroll
    for (int dt = 0; dt < kDt; ++dt)
      *reinterpret_cast<uint32_t*>(dst + dt * 8 + 2 * t) =
          pack_bf16(o[dt][2 * rr] * inv, o[dt][2 * rr + 1] * inv);
    if (t == 0) lse[(b * geo.H + h) * S + i] = l > 0.0f ? (m_run[rr] + log2f(l)) * kLn2 : -INFINITY;
  }
}

Geometry geometry(const Tensor& q, const Tensor& k, const AttentionParams& p) {
  Geometry g{};
  g.B = q.size(0), g.S = q.size(1), g.Sk = k.size(1), g.H = q.size(2), g.Hkv = k.size(2);
  const int64_t D = q.size(3);
  MS_CHECK(k.size(0) == g.B && p.q_offset >= 0 && g.S + p.q_offset <= g.Sk && k.size(3) == D &&
               g.H % g.Hkv == 0,
           "CUDA attention: q ", q.shape.str(), " and k ", k.shape.str(), " do not fit together (query offset ",
           p.q_offset, ")");
  g.G = g.H / g.Hkv;
  g.scale = p.scale != 0.0f ? p.scale : 1.0f / sqrtf(static_cast<float>(D));
  g.scale_log2 = g.scale * kLog2e;
  MS_CHECK(p.s2_group >= 0, "CUDA attention: S2-Attn group ", p.s2_group, " must be >= 0");
  AttentionMask m{g.Sk, p.causal, p.sliding_window, p.q_offset, p.s2_group};
  m.head_offset = p.head_offset, m.heads_total = p.heads_total;
  g.mask = DeviceMask::from(m, g.S);
  return g;
}

void check_tensor(const Tensor& t, const char* what) {
  MS_CHECK(t.dtype == DType::BF16, "CUDA attention: ", what, " must be BF16, got ", dtype_name(t.dtype));
  MS_CHECK(reinterpret_cast<uintptr_t>(t.data) % 16 == 0, "CUDA attention: ", what,
           " is not 16-byte aligned");
}

}  // namespace attn

namespace {

template <int D>
void launch_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                    const attn::Geometry& g) {
  constexpr int kLd = D + attn::kPad;
  const size_t smem = static_cast<size_t>(attn::kBr + 2 * attn::kBc) * kLd * sizeof(bf16);
  MS_CUDA_CHECK(cudaFuncSetAttribute(attn::forward_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(smem)));
  const dim3 grid(static_cast<unsigned>((g.S + attn::kBr - 1) / attn::kBr), static_cast<unsigned>(g.H),
                  static_cast<unsigned>(g.B));
  attn::forward_kernel<D><<<grid, attn::kThreads, smem>>>(
      static_cast<const bf16*>(q.data), static_cast<const bf16*>(k.data), static_cast<const bf16*>(v.data),
      static_cast<bf16*>(out.data), static_cast<float*>(lse.data), g);
  MS_CUDA_LAUNCH_CHECK();
}

}  // namespace

void CudaBackend::attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                    const Tensor& lse, const AttentionParams& p) {
  const attn::Geometry g = attn::geometry(q, k, p);
  MS_DASSERT(v.shape == k.shape && out.shape == q.shape && lse.numel() == g.B * g.H * g.S);
  MS_CHECK(lse.dtype == DType::F32, "CUDA attention: lse must be F32");
  attn::check_tensor(q, "q"), attn::check_tensor(k, "k"), attn::check_tensor(v, "v"),
      attn::check_tensor(out, "out");
  if (g.S == 0) return;
  switch (q.size(3)) {
    case 16:
      launch_forward<16>(q, k, v, out, lse, g);
      break;
    case 32:
      launch_forward<32>(q, k, v, out, lse, g);
      break;
    case 64:
      launch_forward<64>(q, k, v, out, lse, g);
      break;
    case 96:
      launch_forward<96>(q, k, v, out, lse, g);
      break;
    case 128:
      launch_forward<128>(q, k, v, out, lse, g);
      break;
    default:
      fail("CUDA attention: head_dim ", q.size(3), " is not supported (16, 32, 64, 96 or 128)");
  }
}

}  // namespace miniseq::cuda
