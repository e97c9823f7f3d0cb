// FP8 e4m3fn codes and DeepSeek block dequantization.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/ops.h"
#include "kernels/tensor.h"

namespace moeserve {
namespace {

TEST(Fp8Test, EveryCodeRoundTrips) {
  for (int code = 0; code < 256; ++code) {
    const uint8_t bits = static_cast<uint8_t>(code);
    const float value = Fp8E4M3ToF32(bits);
    if ((bits & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(value)) << code;
      EXPECT_EQ(F32ToFp8E4M3(value) & 0x7f, 0x7f) << code;  // still a NaN code
      continue;
    }
    EXPECT_FALSE(std::isnan(value)) << code;
    EXPECT_EQ(F32ToFp8E4M3(value), bits) << code << " -> " << value;
  }
}

TEST(Fp8Test, KnownValues) {
  EXPECT_EQ(Fp8E4M3ToF32(0x7e), 448.0f);  // largest finite: 1.75 * 2^8
  EXPECT_EQ(Fp8E4M3ToF32(0xfe), -448.0f);
  EXPECT_EQ(Fp8E4M3ToF32(0x01), std::ldexp(1.0f, -9));      // smallest subnormal
  EXPECT_EQ(Fp8E4M3ToF32(0x07), 7 * std::ldexp(1.0f, -9));  // largest subnormal
  EXPECT_EQ(Fp8E4M3ToF32(0x08), std::ldexp(1.0f, -6));      // smallest normal
  EXPECT_EQ(Fp8E4M3ToF32(0x38), 1.0f);
  EXPECT_EQ(Fp8E4M3ToF32(0x3c), 1.5f);
  EXPECT_EQ(Fp8E4M3ToF32(0xc0), -2.0f);
  EXPECT_TRUE(std::isnan(Fp8E4M3ToF32(0x7f)));
  EXPECT_TRUE(std::isnan(Fp8E4M3ToF32(0xff)));
  EXPECT_TRUE(std::signbit(Fp8E4M3ToF32(0x80)));  // negative zero

  EXPECT_EQ(F32ToFp8E4M3(1000.0f), 0x7e);  // saturates instead of overflowing
  EXPECT_EQ(F32ToFp8E4M3(-1e30f), 0xfe);
  EXPECT_EQ(F32ToFp8E4M3(std::ldexp(1.0f, -10)), 0x00);  // tie between 0 and 2^-9: even
  EXPECT_EQ(F32ToFp8E4M3(1.0625f), 0x38);                // tie between 1 and 1.125: even mantissa
  EXPECT_EQ(F32ToFp8E4M3(1.1875f), 0x3a);                // tie between 1.125 and 1.25: even
}

TEST(Fp8Test, DequantizeBlocksWithPartialEdgeBlocks) {
  // 130 x 200 with 128-blocks: scale_inv is [2, 2]; the last block row has 2
  // rows and the last block column 72 columns.
  const int64_t rows = 130, cols = 200, block = 128;
  const std::vector<float> scale_inv = {0.5f, 2.0f, 4.0f, 0.25f};
  std::vector<uint8_t> q(rows * cols);
  for (size_t i = 0; i < q.size(); ++i) {
    q[i] = static_cast<uint8_t>((i * 37) % 256);
    if ((q[i] & 0x7f) == 0x7f) q[i] = 0x38;  // no NaN codes in a weight
  }
  std::vector<float> out(rows * cols);
  DequantizeFp8Blocks(q.data(), rows, cols, scale_inv.data(), block, out.data());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float s = scale_inv[(r / block) * 2 + c / block];
      // Exact: one float multiply by a power of two.
      ASSERT_EQ(out[r * cols + c], Fp8E4M3ToF32(q[r * cols + c]) * s) << r << "," << c;
    }
  }
  // Hand-checked corners: code 0x38 (1.0) under each scale.
  std::vector<uint8_t> ones(rows * cols, 0x38);
  DequantizeFp8Blocks(ones.data(), rows, cols, scale_inv.data(), block, out.data());
  EXPECT_EQ(out[0], 0.5f);
  EXPECT_EQ(out[127 * cols + 127], 0.5f);
  EXPECT_EQ(out[127 * cols + 128], 2.0f);
  EXPECT_EQ(out[128 * cols + 0], 4.0f);
  EXPECT_EQ(out[129 * cols + 199], 0.25f);
}

}  // namespace
}  // namespace moeserve
