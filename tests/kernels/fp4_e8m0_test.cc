// DeepSeek-V4's weight formats: E8M0 power-of-two scales and FP4 e2m1 codes
// packed two per byte, decoded exhaustively and dequantized by hand.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/host_weight.h"
#include "kernels/ops.h"
#include "kernels/tensor.h"

namespace moeserve {
namespace {

// E8M0's exponent has float32's bias (127), so a code c in [1, 254] is the
// float32 whose exponent field is c and mantissa 0: an independent decoding.
TEST(E8M0Test, EveryCodeIsThePowerOfTwoItsBitsSay) {
  for (int code = 1; code < 255; ++code) {
    const float expected = std::bit_cast<float>(static_cast<uint32_t>(code) << 23);
    EXPECT_EQ(F8E8M0ToF32(static_cast<uint8_t>(code)), expected) << code;
  }
  // Code 0 is 2^-127, below float32's normal range: the subnormal with only
  // the top mantissa bit set.
  EXPECT_EQ(F8E8M0ToF32(0), std::bit_cast<float>(uint32_t{0x00400000}));
  EXPECT_GT(F8E8M0ToF32(0), 0.0f);
  EXPECT_TRUE(std::isnan(F8E8M0ToF32(0xff)));
  EXPECT_EQ(F8E8M0ToF32(127), 1.0f);
  EXPECT_EQ(F8E8M0ToF32(128), 2.0f);
  EXPECT_EQ(F8E8M0ToF32(120), 1.0f / 128.0f);
  EXPECT_EQ(F8E8M0ToF32(254), std::ldexp(1.0f, 127));
}

TEST(Fp4E2M1Test, EveryCodeMatchesTheTable) {
  // OCP MX e2m1: codes 0..7 are 0, 0.5, 1, 1.5, 2, 3, 4, 6; bit 3 the sign.
  const float magnitudes[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  for (int code = 0; code < 16; ++code) {
    const float v = Fp4E2M1ToF32(static_cast<uint8_t>(code));
    const float expected = code < 8 ? magnitudes[code] : -magnitudes[code - 8];
    EXPECT_EQ(v, expected) << code;
    EXPECT_EQ(std::signbit(v), code >= 8) << code;  // code 8 is -0
  }
  // Only the low nibble counts.
  EXPECT_EQ(Fp4E2M1ToF32(0xf7), 6.0f);
}

// Two rows of 64 inputs: scales per 32, so 2 per row. Bytes hold the codes
// of inputs 2j (low nibble) and 2j+1 (high nibble).
TEST(Fp4E2M1Test, DequantizesByHand) {
  const int64_t rows = 2, cols = 64;
  std::vector<uint8_t> packed(static_cast<size_t>(rows * cols / 2), 0);
  packed[0] = 0x4a;   // row 0: input 0 code 0xa = -1, input 1 code 0x4 = 2
  packed[16] = 0xf1;  // row 0: input 32 code 0x1 = 0.5, input 33 code 0xf = -6
  packed[32] = 0x70;  // row 1: input 0 = 0, input 1 = 6
  packed[63] = 0x3b;  // row 1: input 62 code 0xb = -1.5, input 63 code 0x3 = 1.5
  const std::vector<float> scale = {0.25f, 8.0f, 2.0f, 0.5f};  // [2, 2]
  std::vector<float> out(static_cast<size_t>(rows * cols), -99.0f);
  DequantizeFp4Blocks(packed.data(), rows, cols, scale.data(), 32, out.data());
  EXPECT_EQ(out[0], -1.0f * 0.25f);
  EXPECT_EQ(out[1], 2.0f * 0.25f);
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_EQ(out[32], 0.5f * 8.0f);
  EXPECT_EQ(out[33], -6.0f * 8.0f);
  EXPECT_EQ(out[64 + 0], 0.0f);
  EXPECT_EQ(out[64 + 1], 6.0f * 2.0f);
  EXPECT_EQ(out[64 + 62], -1.5f * 0.5f);
  EXPECT_EQ(out[64 + 63], 1.5f * 0.5f);
  int nonzero = 0;
  for (float v : out) nonzero += v != 0.0f;
  EXPECT_EQ(nonzero, 7);  // nothing else written but zeros
}

TEST(Fp4E2M1Test, HostWeightUnpacksToTwiceTheColumns) {
  const std::vector<int64_t> shape = {1, 16};  // 32 inputs in 16 bytes
  std::vector<uint8_t> packed(16, 0x21);       // inputs 0.5, 1.0 repeated
  const float scale = 4.0f;
  HostWeight w{"w", DType::kF4E2M1x2, shape, packed.data(), &scale, 32};
  auto t = HostWeightToF32(w);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->shape(), (std::vector<int64_t>{1, 32}));
  for (int64_t c = 0; c < 32; ++c) EXPECT_EQ(t->f32()[c], c % 2 == 0 ? 2.0f : 4.0f) << c;

  w.scale_inv = nullptr;
  EXPECT_FALSE(HostWeightToF32(w).ok());
}

}  // namespace
}  // namespace moeserve
