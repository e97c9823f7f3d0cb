// RoPE tables (plain and YaRN) and the Rope op in both pairings.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace moeserve {
namespace {

// cos and sin of the two angles of the hand-checked case, from a table.
constexpr double kCos1 = 0.5403023058681398, kSin1 = 0.8414709848078965;
constexpr double kCos001 = 0.9999500004166653, kSin001 = 0.009999833334166664;

RopeParams Plain(int64_t dim) {
  RopeParams p;
  p.rotary_dim = dim;
  p.theta = 10000.0;
  return p;
}

TEST(RopeTableTest, PlainInverseFrequencies) {
  const RopeTable t = MakeRopeTable(Plain(8), RopeStyle::kInterleaved);
  // 10000^(-i/4) for i = 0..3; float32 pow and division: relative 2^-22.
  const std::vector<double> want = {1.0, 0.1, 0.01, 0.001};
  ASSERT_EQ(t.inv_freq.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(t.inv_freq[i], want[i], want[i] * 3e-7) << i;
  EXPECT_EQ(t.attention_factor, 1.0f);
  EXPECT_EQ(t.style, RopeStyle::kInterleaved);
}

// dim 8, theta 1e4, factor 40, beta_fast 32, beta_slow 1, original 4096:
//   corr_dim(32) = 8 ln(4096 / (64 pi)) / (2 ln 1e4) = 1.309 -> low = 1
//   corr_dim(1)  = 8 ln(4096 / (2 pi))  / (2 ln 1e4) = 2.814 -> high = 3
//   ramp = clamp((i - 1) / 2) = [0, 0, 0.5, 1], smooth = 1 - ramp
//   inv_freq = f / 40 * ramp + f * smooth
//            = [1, 0.1, 0.01 / 80 + 0.01 / 2, 0.001 / 40]
//            = [1, 0.1, 0.005125, 0.000025]
TEST(RopeTableTest, YarnInverseFrequenciesHandChecked) {
  RopeParams p = Plain(8);
  p.yarn = true;
  p.factor = 40.0;
  p.beta_fast = 32.0;
  p.beta_slow = 1.0;
  p.original_max_position_embeddings = 4096;
  p.mscale = 1.0;
  p.mscale_all_dim = 1.0;
  const RopeTable t = MakeRopeTable(p, RopeStyle::kRotateHalf);
  const std::vector<double> want = {1.0, 0.1, 0.005125, 0.000025};
  ASSERT_EQ(t.inv_freq.size(), 4u);
  // A handful of float32 roundings per entry: relative 1e-6.
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(t.inv_freq[i], want[i], want[i] * 1e-6) << i;
  EXPECT_EQ(t.attention_factor, 1.0f);  // mscale == mscale_all_dim
}

TEST(RopeTableTest, YarnDeepSeekV3RampBounds) {
  // DeepSeek-V3: dim 64 gives low = floor(10.47) = 10 and high = ceil(22.51) = 23.
  RopeParams p = Plain(64);
  p.yarn = true;
  p.factor = 40.0;
  const RopeTable plain = MakeRopeTable(Plain(64), RopeStyle::kInterleaved);
  const RopeTable yarn = MakeRopeTable(p, RopeStyle::kInterleaved);
  for (size_t i = 0; i <= 10; ++i) EXPECT_EQ(yarn.inv_freq[i], plain.inv_freq[i]) << i;
  for (size_t i = 11; i < 23; ++i) {
    EXPECT_LT(yarn.inv_freq[i], plain.inv_freq[i]) << i;
    EXPECT_GT(yarn.inv_freq[i], plain.inv_freq[i] / 40) << i;
  }
  // Fully interpolated: f / 40 * 1 + f * 0, one float division.
  for (size_t i = 23; i < 32; ++i) EXPECT_EQ(yarn.inv_freq[i], plain.inv_freq[i] / 40.0f) << i;
}

TEST(RopeTableTest, YarnDisabledWhenFactorAtMostOne) {
  RopeParams p = Plain(8);
  p.yarn = true;
  p.factor = 1.0;
  p.mscale = 0.5;
  const RopeTable t = MakeRopeTable(p, RopeStyle::kInterleaved);
  EXPECT_EQ(t.inv_freq, MakeRopeTable(Plain(8), RopeStyle::kInterleaved).inv_freq);
  EXPECT_EQ(t.attention_factor, 1.0f);
}

TEST(RopeTableTest, YarnMscaleAndAttentionFactor) {
  EXPECT_EQ(YarnMscale(1.0, 3.0), 1.0);
  EXPECT_EQ(YarnMscale(0.5, 3.0), 1.0);
  // 0.1 * ln(40) + 1 = 1.368887945...; 0.1 * 0.707 * ln(4) + 1 = 1.098011...
  EXPECT_NEAR(YarnMscale(40.0, 1.0), 1.3688879454113936, 1e-15);
  EXPECT_NEAR(YarnMscale(4.0, 0.707), 1.0980110113311763, 1e-12);

  RopeParams p = Plain(8);
  p.yarn = true;
  p.factor = 4.0;
  p.mscale = 1.0;
  p.mscale_all_dim = 0.0;  // absent: Qwen-style YaRN, factor 0.1 ln 4 + 1
  EXPECT_FLOAT_EQ(MakeRopeTable(p, RopeStyle::kRotateHalf).attention_factor, 1.1386294f);
  p.mscale = 1.0;
  p.mscale_all_dim = 0.707;  // 1.138629 / 1.098011
  EXPECT_FLOAT_EQ(MakeRopeTable(p, RopeStyle::kRotateHalf).attention_factor,
                  static_cast<float>(1.138629436111989 / 1.0980110113311763));
}

// rotary_dim 4, inv_freq [1, 0.01]; two tokens (positions 1 and 0) with two
// heads each, every head row = [1, 2, 3, 4].
class RopeOpTest : public ::testing::Test {
 protected:
  std::vector<float> Run(RopeStyle style) {
    std::vector<float> x = {1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4};
    const std::vector<int32_t> positions = {1, 0};
    ops_->Rope(MatView{x.data(), 4, 4, 4}, 2, positions, MakeRopeTable(Plain(4), style));
    return x;
  }
  std::unique_ptr<Ops> ops_ = CreateCpuOps();
};

TEST_F(RopeOpTest, InterleavedHandChecked) {
  const std::vector<float> x = Run(RopeStyle::kInterleaved);
  // Pairs (x0, x1) at angle 1 and (x2, x3) at angle 0.01, as complex products.
  const std::vector<double> rotated = {1 * kCos1 - 2 * kSin1, 1 * kSin1 + 2 * kCos1,
                                       3 * kCos001 - 4 * kSin001, 3 * kSin001 + 4 * kCos001};
  for (int head = 0; head < 2; ++head) {
    for (int c = 0; c < 4; ++c) {
      // Float32 products of O(1) values: 1e-6 absolute.
      EXPECT_NEAR(x[head * 4 + c], rotated[c], 1e-6) << head << "," << c;
      EXPECT_EQ(x[8 + head * 4 + c], static_cast<float>(c + 1));  // position 0: identity
    }
  }
}

TEST_F(RopeOpTest, RotateHalfHandChecked) {
  const std::vector<float> x = Run(RopeStyle::kRotateHalf);
  // Pairs (x0, x2) at angle 1 and (x1, x3) at angle 0.01.
  const std::vector<double> rotated = {1 * kCos1 - 3 * kSin1, 2 * kCos001 - 4 * kSin001,
                                       3 * kCos1 + 1 * kSin1, 4 * kCos001 + 2 * kSin001};
  for (int head = 0; head < 2; ++head) {
    for (int c = 0; c < 4; ++c) {
      EXPECT_NEAR(x[head * 4 + c], rotated[c], 1e-6) << head << "," << c;  // as above
      EXPECT_EQ(x[8 + head * 4 + c], static_cast<float>(c + 1));
    }
  }
}

TEST_F(RopeOpTest, ColumnSliceAtLargePositionsWithAttentionFactor) {
  // Like MLA's queries: rope occupies the last 8 columns of each 12-wide head.
  const int64_t tokens = 3, heads = 2, width = 12, dim = 8;
  RopeParams p = Plain(dim);
  p.yarn = true;
  p.factor = 4.0;  // mscale_all_dim 0: attention factor 0.1 ln 4 + 1
  const RopeTable table = MakeRopeTable(p, RopeStyle::kRotateHalf);
  std::vector<float> x = testing::RandomVector(tokens * heads * width, 12);
  const std::vector<float> orig = x;
  const std::vector<int32_t> positions = {5000, 77, 163839};
  ops_->Rope(MatView{x.data() + 4, tokens * heads, dim, width}, heads, positions, table);
  for (int64_t r = 0; r < tokens * heads; ++r) {
    const float* in = orig.data() + r * width;
    const float* out = x.data() + r * width;
    for (int c = 0; c < 4; ++c) EXPECT_EQ(out[c], in[c]);  // outside the slice
    for (int64_t i = 0; i < dim / 2; ++i) {
      // The contract's angle: float32 position * float32 inv_freq.
      const float angle = static_cast<float>(positions[r / heads]) * table.inv_freq[i];
      const double c = std::cos(static_cast<double>(angle)) * table.attention_factor;
      const double s = std::sin(static_cast<double>(angle)) * table.attention_factor;
      const double a = in[4 + i], b = in[4 + i + dim / 2];
      // Float32 rounding of cos, sin, products and sum of O(1) values.
      EXPECT_NEAR(out[4 + i], a * c - b * s, 2e-6);
      EXPECT_NEAR(out[4 + i + dim / 2], b * c + a * s, 2e-6);
    }
  }
}

}  // namespace
}  // namespace moeserve
