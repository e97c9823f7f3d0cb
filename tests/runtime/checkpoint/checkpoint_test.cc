// Checkpoint: reading the golden fixtures and small hand-made checkpoints,
// FP8 dequantization, and lazy opening of shards.
#include "runtime/checkpoint/checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "nlohmann/json.hpp"
#include "tests/runtime/checkpoint/checkpoint_test_util.h"

namespace moeserve {
namespace {

using ::moeserve::testing::Bf16Tensor;
using ::moeserve::testing::F32Tensor;
using ::moeserve::testing::Fp8Codes;
using ::moeserve::testing::Fp8Scales;
using ::moeserve::testing::FreshDir;
using ::moeserve::testing::WriteFile;
using ::moeserve::testing::WriteSmallCheckpoint;
using ::testing::ElementsAre;

const std::string kBf16Fixture = std::string(MOESERVE_FIXTURES_DIR) + "/deepseek_v3_small_bf16";
const std::string kFp8Fixture = std::string(MOESERVE_FIXTURES_DIR) + "/deepseek_v3_small_fp8";

bool IsScale(const std::string& name) { return name.ends_with("_scale_inv"); }

std::unique_ptr<Checkpoint> OpenOrDie(const std::string& dir) {
  auto c = Checkpoint::Open(dir);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *std::move(c) : nullptr;
}

// Every tensor of a fixture reads as finite float32 of its header's shape.
void ReadEveryTensor(const std::string& dir, int64_t expected_weights, int64_t expected_scales) {
  auto ckpt = OpenOrDie(dir);
  ASSERT_NE(ckpt, nullptr);
  EXPECT_EQ(ckpt->stats().shards_opened, 0);  // nothing is mapped before it is needed
  int64_t weights = 0;
  int64_t scales = 0;
  for (const std::string& name : ckpt->TensorNames()) {
    EXPECT_TRUE(ckpt->Has(name));
    auto info = ckpt->Info(name);
    ASSERT_TRUE(info.ok()) << info.status();
    auto t = ckpt->ReadF32(name, info->shape);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->dtype(), DType::kF32);
    EXPECT_EQ(t->shape(), info->shape);
    for (int64_t i = 0; i < t->numel(); ++i) ASSERT_TRUE(std::isfinite(t->f32()[i])) << name;
    ++(IsScale(name) ? scales : weights);
  }
  EXPECT_EQ(weights, expected_weights);
  EXPECT_EQ(scales, expected_scales);
  EXPECT_EQ(ckpt->stats().shards_opened, 2);
  // Each F8 weight read also reads its scale once more.
  EXPECT_EQ(ckpt->stats().tensors_read, weights + 2 * scales);
}

TEST(CheckpointTest, ReadsEveryTensorOfTheBf16Fixture) { ReadEveryTensor(kBf16Fixture, 269, 0); }

TEST(CheckpointTest, ReadsEveryTensorOfTheFp8Fixture) {
  // 269 tensors, of which 233 linear weights are F8_E4M3 with a scale each.
  ReadEveryTensor(kFp8Fixture, 269, 233);
}

// The two fixtures are independent random draws (their weights differ), so
// the FP8 one cannot be compared element by element with the BF16 one; the
// same-weights comparison is made on tiny models (tests/tools/). Here: the
// fixture was quantized as DeepSeek does, scale = amax / 448 per 128x128
// block, so after dequantization every block's largest |w| / scale must be
// exactly 448. Indexing a wrong block's scale (partial edge blocks included)
// breaks that. And the dequantized weights must have the magnitude of the
// BF16 fixture's, drawn from the same distribution.
TEST(CheckpointTest, Fp8FixtureDequantizesWithItsBlockScales) {
  auto bf16 = OpenOrDie(kBf16Fixture);
  auto fp8 = OpenOrDie(kFp8Fixture);
  ASSERT_TRUE(bf16 && fp8);
  int64_t quantized = 0;
  for (const std::string& name : fp8->TensorNames()) {
    auto info = fp8->Info(name);
    ASSERT_TRUE(info.ok()) << info.status();
    if (info->dtype != DType::kF8E4M3) continue;
    ++quantized;
    auto w = fp8->ReadF32(name, info->shape);
    ASSERT_TRUE(w.ok()) << w.status();
    auto scale_info = fp8->Info(name + "_scale_inv");
    ASSERT_TRUE(scale_info.ok()) << scale_info.status();
    auto scale = fp8->ReadF32(name + "_scale_inv", scale_info->shape);
    ASSERT_TRUE(scale.ok()) << scale.status();
    const int64_t rows = info->shape[0];
    const int64_t cols = info->shape[1];
    const int64_t scale_cols = scale_info->shape[1];
    std::vector<float> block_max(static_cast<size_t>(scale->numel()), 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t b = (r / 128) * scale_cols + c / 128;
        const float q = std::fabs(w->f32()[r * cols + c]) / scale->f32()[b];
        block_max[static_cast<size_t>(b)] = std::max(block_max[static_cast<size_t>(b)], q);
      }
    }
    for (float m : block_max) ASSERT_FLOAT_EQ(m, kFp8E4M3Max) << name;

    auto ref = bf16->ReadF32(name, info->shape);
    ASSERT_TRUE(ref.ok()) << ref.status();
    double ss_fp8 = 0;
    double ss_ref = 0;
    for (int64_t i = 0; i < w->numel(); ++i) {
      ss_fp8 += double{w->f32()[i]} * w->f32()[i];
      ss_ref += double{ref->f32()[i]} * ref->f32()[i];
    }
    // Thousands of samples per tensor: the RMS of two draws agrees closely.
    EXPECT_NEAR(std::sqrt(ss_fp8 / ss_ref), 1.0, 0.15) << name;
  }
  EXPECT_EQ(quantized, 233);
}

TEST(CheckpointTest, ReadingOneLayerOpensOneShard) {
  auto ckpt = OpenOrDie(kBf16Fixture);
  ASSERT_NE(ckpt, nullptr);
  int64_t bytes = 0;
  int64_t count = 0;
  for (const std::string& name : ckpt->TensorNames()) {
    if (!name.starts_with("model.layers.0.")) continue;
    auto info = ckpt->Info(name);
    ASSERT_TRUE(info.ok()) << info.status();
    ASSERT_TRUE(ckpt->ReadF32(name, info->shape).ok());
    bytes += static_cast<int64_t>(info->end - info->begin);
    ++count;
  }
  EXPECT_EQ(count, 12);  // 2 norms, 7 attention tensors, 3 MLP
  EXPECT_EQ(ckpt->stats().shards_opened, 1);
  EXPECT_EQ(ckpt->stats().tensors_read, count);
  EXPECT_EQ(ckpt->stats().bytes_read, bytes);

  const std::vector<int64_t> head_shape = {1000, 256};
  ASSERT_TRUE(ckpt->ReadF32("lm_head.weight", head_shape).ok());
  EXPECT_EQ(ckpt->stats().shards_opened, 2);
}

TEST(CheckpointTest, ReadsEachDtypeExactly) {
  const std::string dir = FreshDir();
  WriteSmallCheckpoint(dir);
  auto ckpt = OpenOrDie(dir);
  ASSERT_NE(ckpt, nullptr);
  EXPECT_THAT(ckpt->TensorNames(),
              ElementsAre(testing::kEmbed, testing::kFp8Weight, testing::kFp8Scale, testing::kNorm,
                          testing::kFinalNorm));
  EXPECT_FALSE(ckpt->Has("model.layers.7.mlp.gate.weight"));

  auto embed = ckpt->ReadF32(testing::kEmbed, std::vector<int64_t>{8, 4});
  ASSERT_TRUE(embed.ok()) << embed.status();
  for (int i = 0; i < 32; ++i) EXPECT_EQ(embed->f32()[i], -1.0f + 0.25f * i);
  auto norm = ckpt->ReadF32(testing::kNorm, std::vector<int64_t>{4});
  ASSERT_TRUE(norm.ok()) << norm.status();
  EXPECT_THAT(std::vector<float>(norm->f32(), norm->f32() + 4), ElementsAre(0.5, 0.75, 1, 1.25));

  // [130, 200] in 128x128 blocks: a partial block row and column.
  auto w = ckpt->ReadF32(testing::kFp8Weight, std::vector<int64_t>{130, 200});
  ASSERT_TRUE(w.ok()) << w.status();
  const Tensor codes = Fp8Codes(130, 200);
  const Tensor scales = Fp8Scales(130, 200, 128);
  const auto* q = static_cast<const uint8_t*>(codes.raw());
  for (int64_t r = 0; r < 130; ++r) {
    for (int64_t c = 0; c < 200; ++c) {
      const float want = Fp8E4M3ToF32(q[r * 200 + c]) * scales.f32()[(r / 128) * 2 + c / 128];
      ASSERT_EQ(w->f32()[r * 200 + c], want) << r << "," << c;
    }
  }
  EXPECT_EQ(ckpt->stats().tensors_read, 4);  // embed, norm, weight and its scale
  EXPECT_EQ(ckpt->stats().bytes_read, 8 * 4 * 2 + 4 * 4 + 130 * 200 + 2 * 2 * 4);
}

TEST(CheckpointTest, InfoOpensTheShardButReadsNothing) {
  const std::string dir = FreshDir();
  WriteSmallCheckpoint(dir);
  auto ckpt = OpenOrDie(dir);
  auto info = ckpt->Info(testing::kFinalNorm);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->dtype, DType::kBF16);
  EXPECT_THAT(info->shape, ElementsAre(4));
  EXPECT_EQ(ckpt->stats().shards_opened, 1);
  EXPECT_EQ(ckpt->stats().tensors_read, 0);
  auto missing = ckpt->Info("nope.weight");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), ::testing::HasSubstr("nope.weight"));
}

TEST(CheckpointTest, BlockSizeComesFromQuantizationConfig) {
  const std::string dir = FreshDir();
  WriteFile(dir + "/config.json",
            R"({"quantization_config": {"quant_method": "fp8", "weight_block_size": [64, 64]}})");
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors",
                               {{"w", Fp8Codes(70, 130)}, {"w_scale_inv", Fp8Scales(70, 130, 64)}})
                  .ok());
  auto ckpt = OpenOrDie(dir);
  ASSERT_NE(ckpt, nullptr);
  auto w = ckpt->ReadF32("w", std::vector<int64_t>{70, 130});
  ASSERT_TRUE(w.ok()) << w.status();
  const Tensor codes = Fp8Codes(70, 130);
  const Tensor scales = Fp8Scales(70, 130, 64);
  const auto* q = static_cast<const uint8_t*>(codes.raw());
  const int64_t r = 69;
  const int64_t c = 129;  // block (1, 2)
  EXPECT_EQ(w->f32()[r * 130 + c], Fp8E4M3ToF32(q[r * 130 + c]) * scales.f32()[1 * 3 + 2]);
}

TEST(CheckpointTest, SingleFileCheckpointIsReadWithoutAnIndex) {
  const std::string dir = FreshDir();
  WriteFile(dir + "/config.json", R"({"model_type": "qwen3_moe"})");
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors",
                               {{"b", F32Tensor({2}, 3)}, {"a", Bf16Tensor({2, 2}, 1)}})
                  .ok());
  auto ckpt = OpenOrDie(dir);
  ASSERT_NE(ckpt, nullptr);
  EXPECT_EQ(ckpt->config_json()["model_type"], "qwen3_moe");
  EXPECT_THAT(ckpt->TensorNames(), ElementsAre("a", "b"));
  EXPECT_EQ(ckpt->stats().shards_opened, 1);  // its header is read at Open
  auto a = ckpt->ReadF32("a", std::vector<int64_t>{2, 2});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->f32()[3], 1.75f);
  EXPECT_EQ(ckpt->stats().shards_opened, 1);
}

TEST(CheckpointTest, IndexIsPreferredOverASingleFile) {
  const std::string dir = FreshDir();
  WriteSmallCheckpoint(dir);
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", {{"stale", F32Tensor({1}, 0)}}).ok());
  auto ckpt = OpenOrDie(dir);
  ASSERT_NE(ckpt, nullptr);
  EXPECT_FALSE(ckpt->Has("stale"));
  EXPECT_TRUE(ckpt->Has(testing::kEmbed));
}

}  // namespace
}  // namespace moeserve
