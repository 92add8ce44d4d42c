// Stochastic rounding fp32 -> bf16 for weights kept in bf16 without an fp32 master copy (--master_weights
// False). Round to nearest drops every update below half a bf16 ulp (lr·m/√v ≈ 1e-5 against an ulp of 2^-8
// at 1.0), so plain bf16 AdamW stops moving most weights; stochastic rounding rounds up with probability (x −
// down) / ulp, so E[round(x)] = x exactly and small updates survive on average.
//
// The random bits are a pure function of (seed, step, parameter, element index): a counter-based hash
// (SplitMix64's finalizer), identical on the host and the device, so the CPU and CUDA backends draw the same
// bits, every run with the same seed gives the same weights, and a resume needs nothing saved beyond the
// step.
#pragma once

#include <cstdint>
#include <string_view>

#ifdef __CUDACC__
#define MS_SR_HD __host__ __device__ __forceinline__
#else
#define MS_SR_HD inline
#include <cstring>
#endif

namespace miniseq::sr {

// SplitMix64's output function: a bijective 64-bit mixer.
MS_SR_HD uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// FNV-1a of a parameter's Hugging Face name: the parameter's key, independent of the table's order.
inline uint64_t name_key(std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// The stream of one parameter's update at one optimizer step (1-based).
MS_SR_HD uint64_t stream(uint64_t seed, uint64_t step, uint64_t param_key) {
  return mix64(mix64(mix64(seed + 0x9e3779b97f4a7c15ull) ^ step) ^ param_key);
}

// 16 random bits for element i of a stream: the i-th output of the SplitMix64 generator started at `stream`.
MS_SR_HD uint32_t bits16(uint64_t stream, uint64_t i) {
  return static_cast<uint32_t>(mix64(stream + (i + 1) * 0x9e3779b97f4a7c15ull) >> 48);
}

// The stream whose element k is element `offset` + k of `stream`: bits16(advance(s, o), k) == bits16(s, o +
// k). A part of a parameter updated on its own (a ZeRO shard's piece) draws the bits the whole update would.
MS_SR_HD uint64_t advance(uint64_t stream, uint64_t offset) {
  return stream + offset * 0x9e3779b97f4a7c15ull;
}

MS_SR_HD uint32_t f32_bits(float x) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(x);
#else
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
#endif
}

// The bf16 bits of x rounded stochastically with `r16` (16 uniform random bits): the 16 bits that bf16 drops
// are added to r16, so the magnitude rounds up exactly when r16 >= 2^16 − dropped, i.e. with probability
// dropped / 2^16. Exact bf16 values stay unchanged; NaN and ±inf round to nearest (NaN stays a quiet NaN); a
// carry out of the largest finite binade gives ±inf, as rounding up does.
MS_SR_HD uint16_t f32_to_bf16_stochastic(float x, uint32_t r16) {
  const uint32_t b = f32_bits(x);
  if ((b & 0x7f800000u) == 0x7f800000u)
    return static_cast<uint16_t>((b & 0x7fffffu) ? (b >> 16) | 0x0040u : (b >> 16));
  return static_cast<uint16_t>((b + (r16 & 0xffffu)) >> 16);
}

}  // namespace miniseq::sr
