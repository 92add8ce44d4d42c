// Shared pieces of the flash-attention kernels (attention.cu, attention_backward.cu): the bf16 tensor-core
// MMA (mma.sync m16n8k16, fp32 accumulators), tile loads into padded shared memory, and the mask on the
// device.
//
// Fragment layouts of mma.m16n8k16 (lane = 4·g + t, g = lane / 4 in 0..7, t = lane % 4 in 0..3), the facts
// the kernels are built on:
//   A (16×16, row-major):  a[0] = A[g][2t..2t+1],  a[1] = A[g+8][2t..2t+1],  a[2] = A[g][2t+8..],  a[3] =
//   A[g+8][2t+8..] B (16×8, "col"):       b[0] = B[2t..2t+1][g],  b[1] = B[2t+8..2t+9][g] C (16×8, fp32):
//   c[0..1] = C[g][2t..2t+1],  c[2..3] = C[g+8][2t..2t+1]
// Each 32-bit register holds two bf16, the lower column (or row, for B) in the low half. So a score tile held
// as C fragments of two adjacent n-tiles IS the A fragment of the next product (P·V) after packing to bf16,
// and each thread knows the rows (g, g + 8) and columns of its scores: the online softmax runs in registers,
// with row reductions over the 4 lanes of a quad.
#pragma once

#include <cstdint>

#include "miniseq/backend/cuda/attention_mask_device.h"
#include "miniseq/backend/cuda/common.cuh"
#include "miniseq/ops/backend.h"

namespace miniseq::cuda::attn {

constexpr int kPad =
    8;  // bf16 elements of padding per shared-memory row: rows 16 bytes apart mod 128, no conflicts
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct Geometry {
  int64_t B, S, Sk, H, Hkv, G;  // S queries, Sk keys (Sk = S except in KV-cache decoding)
  float scale;       // softmax scale (natural units)
  float scale_log2;  // scale · log2(e): scores in base-2 units for exp2f
  DeviceMask mask;
};

// Host side (attention.cu): sizes and mask from the tensors and params; checks dtype and 16-byte alignment.
Geometry geometry(const Tensor& q, const Tensor& k, const AttentionParams& p);
void check_tensor(const Tensor& t, const char* what);

__device__ __forceinline__ void mma_16816(float* c, const uint32_t* a, const uint32_t* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t r;
  memcpy(&r, &v, 4);
  return r;
}

__device__ __forceinline__ uint32_t pack_raw(bf16 lo, bf16 hi) {
  __nv_bfloat162 v;
  v.x = lo;
  v.y = hi;
  uint32_t r;
  memcpy(&r, &v, 4);
  return r;
}

__device__ __forceinline__ uint32_t ld32(const bf16* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// A fragment of the 16×16 block at (row r0, col c0) of a row-major shared tile with leading dimension ld.
__device__ __forceinline__ void load_a(uint32_t* a, const bf16* s, int ld, int r0, int c0, int g, int t) {
  a[0] = ld32(s + (r0 + g) * ld + c0 + 2 * t);
  a[1] = ld32(s + (r0 + g + 8) * ld + c0 + 2 * t);
  a[2] = ld32(s + (r0 + g) * ld + c0 + 2 * t + 8);
  a[3] = ld32(s + (r0 + g + 8) * ld + c0 + 2 * t + 8);
}

// B fragment where B[k][n] = M[n][k] for a row-major shared tile M (k contiguous): B = Mᵀ, k-block at c0,
// n-block at r0 (the keys of S = Q·Kᵀ, say).
__device__ __forceinline__ void load_b_trans(uint32_t* b, const bf16* s, int ld, int r0, int c0, int g,
                                             int t) {
  b[0] = ld32(s + (r0 + g) * ld + c0 + 2 * t);
  b[1] = ld32(s + (r0 + g) * ld + c0 + 2 * t + 8);
}

// B fragment where B[k][n] = M[k][n] for a row-major shared tile M (n contiguous): k-block at r0, n-block at
// c0 (V in P·V, say). Two 16-bit loads per register.
__device__ __forceinline__ void load_b(uint32_t* b, const bf16* s, int ld, int r0, int c0, int g, int t) {
  b[0] = pack_raw(s[(r0 + 2 * t) * ld + c0 + g], s[(r0 + 2 * t + 1) * ld + c0 + g]);
  b[1] = pack_raw(s[(r0 + 2 * t + 8) * ld + c0 + g], s[(r0 + 2 * t + 9) * ld + c0 + g]);
}

// Rows [r0, r0 + rows) of head `head` of a [B, S, Hx, D] tensor into shared [rows][D + kPad]; rows at or past
// S are zero. 16-byte loads (D is a multiple of 16 and the tensor 16-byte aligned, checked on the host).
template <int D>
__device__ __forceinline__ void load_rows(bf16* dst, const bf16* src, int64_t b, int64_t r0, int rows,
                                          int64_t S, int64_t Hx, int64_t head) {
  constexpr int kVec = 8, kPerRow = D / kVec, kLd = D + kPad;
  for (int idx = threadIdx.x; idx < rows * kPerRow; idx += blockDim.x) {
    const int r = idx / kPerRow, c = (idx % kPerRow) * kVec;
    const int64_t i = r0 + r;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (i < S) v = *reinterpret_cast<const uint4*>(src + ((b * S + i) * Hx + head) * D + c);
    *reinterpret_cast<uint4*>(dst + r * kLd + c) = v;
  }
}

}  // namespace miniseq::cuda::attn
