#include "miniseq/core/dtype.h"

#include <cmath>

namespace miniseq {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
  }
  return "?";
}

bool dtype_from_name(std::string_view name, DType* out) {
  if (name == "F32") *out = DType::F32;
  else if (name == "BF16") *out = DType::BF16;
  else if (name == "F16") *out = DType::F16;
  else return false;
  return true;
}

bool dtype_from_torch_name(std::string_view name, DType* out) {
  if (name == "float32" || name == "float") *out = DType::F32;
  else if (name == "bfloat16") *out = DType::BF16;
  else if (name == "float16" || name == "half") *out = DType::F16;
  else return false;
  return true;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | (mant << 13));  // inf / NaN (payload kept)
  if (exp == 0) {
    if (mant == 0) return bits_to_f32(sign);
    // subnormal: value = mant * 2^-24
    float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  return bits_to_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t f32_to_f16(float f) {
  uint32_t b = f32_to_bits(f);
  uint16_t sign = static_cast<uint16_t>((b >> 16) & 0x8000u);
  uint32_t abs = b & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));  // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (abs < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
    // value / 2^-24, rounded to nearest even
    float v = bits_to_f32(abs);
    float q = std::nearbyint(v * 16777216.0f);  // default rounding mode is nearest-even
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(q));
  }
  uint32_t rounding = 0xfffu + ((abs >> 13) & 1u);
  uint32_t r = abs + rounding;
  return static_cast<uint16_t>(sign | (((r >> 23) - 112) << 10) | ((r >> 13) & 0x3ffu));
}

void convert(const void* src, DType src_type, void* dst, DType dst_type, size_t n) {
  if (src_type == dst_type) {
    std::memcpy(dst, src, n * dtype_size(src_type));
    return;
  }
  auto load = [&](size_t i) -> float {
    switch (src_type) {
      case DType::F32: return static_cast<const float*>(src)[i];
      case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(src)[i]);
      case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(src)[i]);
    }
    return 0.0f;
  };
  switch (dst_type) {
    case DType::F32: {
      float* d = static_cast<float*>(dst);
#pragma omp parallel for schedule(static) if (n > (1u << 16))
      for (size_t i = 0; i < n; ++i) d[i] = load(i);
      break;
    }
    case DType::BF16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
#pragma omp parallel for schedule(static) if (n > (1u << 16))
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(load(i));
      break;
    }
    case DType::F16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
#pragma omp parallel for schedule(static) if (n > (1u << 16))
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(load(i));
      break;
    }
  }
}

}  // namespace miniseq
