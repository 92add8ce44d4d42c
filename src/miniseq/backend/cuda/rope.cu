// Rotary position embedding, Hugging Face rotate_half convention, in place on x [B, S, Hx, D] (bf16).
// The angles follow the CPU backend (backend/cpu/rope.cpp) step by step in fp32: inv_freq comes with the call
// (model/rope_scaling.cpp, the same host values for both backends), angle = float(pos)·inv_freq[i] on the device
// (one fp32 product, as on the CPU), then the accurate sincosf (not the fast intrinsics), times attention_scaling.
// The [S, D/2] cos and sin tables are cached while the positions and parameters stay the same (every layer of a
// step).
#include <cmath>
#include <cstring>
#include <vector>

#include "miniseq/backend/cuda/common.cuh"
#include "miniseq/backend/cuda/cuda_ops.h"

namespace miniseq::cuda {

namespace {

// table: [S, half] cos, then [S, half] sin.
__global__ void rope_table_kernel(const int32_t* pos, const float* inv_freq, int64_t S, int64_t half,
                                  float scaling, float* table) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= S * half) return;
  const int64_t s = idx / half, i = idx % half;
  const float angle = static_cast<float>(pos[s]) * inv_freq[i];
  float sn, cs;
  sincosf(angle, &sn, &cs);
  table[idx] = cs * scaling;
  table[S * half + idx] = sn * scaling;
}

template <typename T>
__global__ void rope_apply_kernel(T* x, const float* table, int64_t B, int64_t S, int64_t Hx, int64_t half,
                                  float sign) {
  const int64_t n = B * S * Hx * half;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx % half, row = idx / half;  // row = (b·S + s)·Hx + h
    const int64_t s = (row / Hx) % S;
    const float c = table[s * half + i], sn = sign * table[S * half + s * half + i];
    T* x1 = x + row * 2 * half;
    const float a = to_f32(x1[i]), b = to_f32(x1[i + half]);
    x1[i] = from_f32<T>(a * c - b * sn);
    x1[i + half] = from_f32<T>(b * c + a * sn);
  }
}

void rope_apply(const Tensor& x, const float* table, float sign) {
  const int64_t B = x.size(0), S = x.size(1), Hx = x.size(2), half = x.size(3) / 2;
  const int64_t n = B * S * Hx * half;
  if (n == 0) return;
  dispatch_dtype(x.dtype, "rope", [&](auto tx) {
    using T = decltype(tx);
    rope_apply_kernel<<<grid_for(n, 256), 256>>>(static_cast<T*>(x.data), table, B, S, Hx, half, sign);
  });
  MS_CUDA_LAUNCH_CHECK();
}

}  // namespace

const float* CudaBackend::rope_table(const int32_t* positions, int64_t S, int64_t D, const RopeParams& p) {
  const int64_t half = D / 2;
  const size_t floats = static_cast<size_t>(half + 2 * S * half);
  const size_t bytes = floats * sizeof(float) + static_cast<size_t>(S) * sizeof(int32_t);
  const bool same =
      rope_inv_freq_ == p.inv_freq && rope_scaling_ == p.attention_scaling &&
      rope_positions_.size() == static_cast<size_t>(S) &&
      std::memcmp(rope_positions_.data(), positions, static_cast<size_t>(S) * sizeof(int32_t)) == 0 &&
      (planned_scratch_ ? planned_layout_.bytes[kRopeTable] : slots_[kRopeTable].bytes) >= bytes;
  auto* base = static_cast<float*>(scratch(kRopeTable, bytes));
  float* table = base + half;
  if (same) return table;
  MS_CHECK(static_cast<int64_t>(p.inv_freq.size()) == half, "internal: rope inv_freq has ", p.inv_freq.size(),
           " entries for head_dim ", D);
  auto* dpos = reinterpret_cast<int32_t*>(base + floats);
  MS_CUDA_CHECK(
      cudaMemcpy(base, p.inv_freq.data(), static_cast<size_t>(half) * sizeof(float), cudaMemcpyHostToDevice));
  MS_CUDA_CHECK(
      cudaMemcpy(dpos, positions, static_cast<size_t>(S) * sizeof(int32_t), cudaMemcpyHostToDevice));
  rope_table_kernel<<<grid_for(S * half, 256, 1LL << 30), 256>>>(dpos, base, S, half, p.attention_scaling, table);
  MS_CUDA_LAUNCH_CHECK();
  rope_positions_.assign(positions, positions + S);
  rope_inv_freq_ = p.inv_freq, rope_scaling_ = p.attention_scaling;
  return table;
}

void CudaBackend::rope_forward(const Tensor& x, const int32_t* positions, const RopeParams& p) {
  MS_DASSERT(x.ndim() == 4 && x.size(3) % 2 == 0);
  rope_apply(x, rope_table(positions, x.size(1), x.size(3), p), 1.0f);
}

void CudaBackend::rope_backward(const Tensor& dx, const int32_t* positions, const RopeParams& p) {
  MS_DASSERT(dx.ndim() == 4 && dx.size(3) % 2 == 0);
  rope_apply(dx, rope_table(positions, dx.size(1), dx.size(3), p), -1.0f);
}

}  // namespace miniseq::cuda
