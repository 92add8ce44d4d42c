// bf16 / f16 conversions against known bit patterns.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "miniseq/core/dtype.h"

using namespace miniseq;

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_bf16(bits_to_f32(0x3f808000u)), 0x3f80);  // exact tie, even stays
  EXPECT_EQ(f32_to_bf16(bits_to_f32(0x3f818000u)), 0x3f82);  // exact tie, odd rounds up to even
  EXPECT_EQ(f32_to_bf16(bits_to_f32(0x3f808001u)), 0x3f81);  // above the tie rounds up
  EXPECT_EQ(f32_to_bf16(bits_to_f32(0x3f807fffu)), 0x3f80);  // below the tie rounds down
  EXPECT_EQ(f32_to_bf16(bits_to_f32(0x7f7fffffu)), 0x7f80);  // max float overflows to +inf
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_bf16(bits_to_f32(0x00000001u)), 0x0000);  // smallest subnormal rounds to zero
}

TEST(DType, Bf16KeepsNaN) {
  // A NaN whose payload lives only in the low 16 bits must not become infinity.
  uint16_t h = f32_to_bf16(bits_to_f32(0x7f800001u));
  EXPECT_TRUE(std::isnan(bf16_to_f32(h)));
  EXPECT_EQ(h & 0x7f80, 0x7f80);
  EXPECT_NE(h & 0x007f, 0);
  uint16_t neg = f32_to_bf16(bits_to_f32(0xffc00000u));
  EXPECT_EQ(neg, 0xffc0);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()), 0x7fc0);
}

TEST(DType, Bf16RoundTripIsExactForBf16Values) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    float f = bf16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_bf16(f), h) << std::hex << h;
  }
}

TEST(DType, F16Conversions) {
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_TRUE(std::isinf(f16_to_f32(0x7c00)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // the tie above max rounds to inf
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);        // tie between 0 and the smallest subnormal: even
  EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);        // tie between 1 and 2 subnormal units: even
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -14)), 0x0400);        // smallest normal
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(std::numeric_limits<float>::quiet_NaN()))));
  for (uint32_t h = 0; h < 0x10000; ++h) {
    float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16(f), h) << std::hex << h;
  }
}

TEST(DType, ConvertBuffers) {
  float src[4] = {1.0f, -0.5f, 3.140625f, 0.0f};
  uint16_t bf[4];
  convert(src, DType::F32, bf, DType::BF16, 4);
  float back[4];
  convert(bf, DType::BF16, back, DType::F32, 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(back[i], src[i]);
  uint16_t h[4];
  convert(bf, DType::BF16, h, DType::F16, 4);
  convert(h, DType::F16, back, DType::F32, 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(back[i], src[i]);
}
