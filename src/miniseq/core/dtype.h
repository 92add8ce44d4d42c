// Element types. F32 is the compute type on CPU; BF16 is the storage type of real checkpoints and of the CUDA
// backend; F16 is read and converted. Conversions: bf16 <- f32 rounds to nearest even and keeps NaNs NaN.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace miniseq {

enum class DType : uint8_t { F32, BF16, F16 };

constexpr size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }
std::string_view dtype_name(DType t);  // safetensors spelling: "F32", "BF16", "F16"
// Parses a safetensors dtype name; returns false for anything but F32/BF16/F16.
bool dtype_from_name(std::string_view name, DType* out);
// torch_dtype spelling in config.json ("float32", "bfloat16", "float16").
bool dtype_from_torch_name(std::string_view name, DType* out);

inline float bits_to_f32(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
inline uint32_t f32_to_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

inline float bf16_to_f32(uint16_t h) { return bits_to_f32(static_cast<uint32_t>(h) << 16); }

// Round to nearest, ties to even. NaN stays NaN (quiet bit forced, sign kept); overflow rounds to +-inf as IEEE does.
inline uint16_t f32_to_bf16(float f) {
  uint32_t b = f32_to_bits(f);
  if ((b & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((b >> 16) | 0x0040u);
  uint32_t rounding = 0x7fffu + ((b >> 16) & 1u);
  return static_cast<uint16_t>((b + rounding) >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);  // round to nearest even, NaN preserved, overflow to inf

// Converts n elements between dtypes (same dtype is a copy). Used by loaders and writers.
void convert(const void* src, DType src_type, void* dst, DType dst_type, size_t n);

}  // namespace miniseq
