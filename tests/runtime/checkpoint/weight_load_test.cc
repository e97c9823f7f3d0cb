// Checkpoint::ReadRaw (weights in their checkpoint dtype, validated as
// ReadF32 validates them) and the CPU backend's LoadWeight, which must give
// exactly what ReadF32 gave before weights went through backends: the golden
// model tests compare logits to 1e-5 and must not move.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/checkpoint/safetensors.h"
#include "tests/runtime/checkpoint/checkpoint_test_util.h"

namespace moeserve {
namespace {

using testing::Bf16Tensor;
using ::testing::ElementsAre;
using testing::F32Tensor;
using testing::Fp8Codes;
using testing::Fp8Scales;
using testing::FreshDir;
using ::testing::HasSubstr;
using testing::WriteFile;
using testing::WriteSmallCheckpoint;

std::unique_ptr<Checkpoint> OpenOrDie(const std::string& dir) {
  auto ckpt = Checkpoint::Open(dir);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status();
  return ckpt.ok() ? *std::move(ckpt) : nullptr;
}

bool SameBytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

TEST(ReadRawTest, KeepsTheCheckpointDtypeAndBytes) {
  const std::string dir = FreshDir();
  WriteSmallCheckpoint(dir);
  auto ckpt = OpenOrDie(dir);
  ASSERT_NE(ckpt, nullptr);

  auto embed = ckpt->ReadRaw(testing::kEmbed, std::vector<int64_t>{8, 4});
  ASSERT_TRUE(embed.ok()) << embed.status();
  EXPECT_EQ(embed->name, testing::kEmbed);
  EXPECT_EQ(embed->dtype, DType::kBF16);
  EXPECT_THAT(embed->shape, ElementsAre(8, 4));
  const Tensor bf16 = Bf16Tensor({8, 4}, -1.0f);
  ASSERT_EQ(embed->data.size(), bf16.nbytes());
  EXPECT_EQ(std::memcmp(embed->data.data(), bf16.raw(), bf16.nbytes()), 0);
  EXPECT_TRUE(embed->scale_inv.empty());
  EXPECT_EQ(embed->block, 0);

  auto norm = ckpt->ReadRaw(testing::kNorm, std::vector<int64_t>{4});
  ASSERT_TRUE(norm.ok()) << norm.status();
  EXPECT_EQ(norm->dtype, DType::kF32);
  EXPECT_EQ(norm->data.size(), 16u);

  auto w = ckpt->ReadRaw(testing::kFp8Weight, std::vector<int64_t>{130, 200});
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->dtype, DType::kF8E4M3);
  const Tensor codes = Fp8Codes(130, 200);
  ASSERT_EQ(w->data.size(), codes.nbytes());
  EXPECT_EQ(std::memcmp(w->data.data(), codes.raw(), codes.nbytes()), 0);
  const Tensor scales = Fp8Scales(130, 200, 128);
  EXPECT_EQ(w->block, 128);
  EXPECT_EQ(w->scale_inv, std::vector<float>(scales.f32(), scales.f32() + scales.numel()));

  const HostWeight host = w->host();
  EXPECT_EQ(host.name, testing::kFp8Weight);
  EXPECT_EQ(host.dtype, DType::kF8E4M3);
  EXPECT_THAT(std::vector<int64_t>(host.shape.begin(), host.shape.end()), ElementsAre(130, 200));
  EXPECT_EQ(host.data, w->data.data());
  EXPECT_EQ(host.scale_inv, w->scale_inv.data());
  EXPECT_EQ(host.block, 128);
  // As ReadF32 counts: embed, norm, the weight and its scale.
  EXPECT_EQ(ckpt->stats().tensors_read, 4);
  EXPECT_EQ(ckpt->stats().bytes_read, 8 * 4 * 2 + 4 * 4 + 130 * 200 + 2 * 2 * 4);
}

// F32, BF16 and FP8 (with partial blocks) through the CPU backend for every
// use: float32, bit for bit ReadF32's.
TEST(CpuLoadWeightTest, EqualsReadF32BitForBit) {
  const std::string dir = FreshDir();
  WriteSmallCheckpoint(dir);
  auto ckpt = OpenOrDie(dir);
  ASSERT_NE(ckpt, nullptr);
  auto backend = CreateCpuBackend();
  const struct {
    const char* name;
    std::vector<int64_t> shape;
  } weights[] = {{testing::kNorm, {4}},
                 {testing::kFinalNorm, {4}},
                 {testing::kEmbed, {8, 4}},
                 {testing::kFp8Weight, {130, 200}}};
  for (const auto& [name, shape] : weights) {
    auto want = ckpt->ReadF32(name, shape);
    ASSERT_TRUE(want.ok()) << want.status();
    auto raw = ckpt->ReadRaw(name, shape);
    ASSERT_TRUE(raw.ok()) << raw.status();
    for (WeightUse use :
         {WeightUse::kMatrix, WeightUse::kEmbedding, WeightUse::kVector, WeightUse::kMlaKvB}) {
      auto got = backend->LoadWeight(raw->host(), use);
      ASSERT_TRUE(got.ok()) << name << ": " << got.status();
      EXPECT_EQ(got->device(), Device::kCpu);
      EXPECT_TRUE(SameBytes(*got, *want)) << name << " use " << static_cast<int>(use);
    }
  }
}

// FP8 in 64x64 blocks and a BF16 tensor whose data starts at an odd offset
// of the file (the safetensors data section promises no alignment).
TEST(CpuLoadWeightTest, OtherBlockSizesAndUnalignedData) {
  const std::string dir = FreshDir();
  WriteFile(dir + "/config.json",
            R"({"quantization_config": {"quant_method": "fp8", "weight_block_size": [64, 64]}})");
  Tensor odd = Tensor::Empty(DType::kF8E4M3, {1, 1});  // 1 byte: what follows is odd
  static_cast<uint8_t*>(odd.raw())[0] = 0x38;
  ASSERT_TRUE(
      WriteSafetensors(dir + "/model.safetensors", {{"a_odd", odd},
                                                    {"a_odd_scale_inv", F32Tensor({1, 1}, 2)},
                                                    {"b", Bf16Tensor({3, 5}, 0.5f)},
                                                    {"w", Fp8Codes(70, 130)},
                                                    {"w_scale_inv", Fp8Scales(70, 130, 64)}})
          .ok());
  auto ckpt = OpenOrDie(dir);
  ASSERT_NE(ckpt, nullptr);
  auto backend = CreateCpuBackend();
  for (const auto& [name, shape] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
           {"a_odd", {1, 1}}, {"b", {3, 5}}, {"w", {70, 130}}}) {
    auto want = ckpt->ReadF32(name, shape);
    ASSERT_TRUE(want.ok()) << want.status();
    auto raw = ckpt->ReadRaw(name, shape);
    ASSERT_TRUE(raw.ok()) << raw.status();
    auto got = backend->LoadWeight(raw->host(), WeightUse::kMatrix);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(SameBytes(*got, *want)) << name;
  }
  auto w = ckpt->ReadRaw("w", std::vector<int64_t>{70, 130});
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->block, 64);
  EXPECT_EQ(w->scale_inv.size(), 2u * 3u);
}

// ReadRaw reports what ReadF32 reports, word for word.
TEST(ReadRawTest, ErrorsAreReadF32s) {
  const std::string dir = FreshDir();
  WriteFile(dir + "/config.json", R"({"model_type": "deepseek_v3"})");
  ASSERT_TRUE(
      WriteSafetensors(dir + "/model.safetensors", {{"f32", F32Tensor({2, 3}, 1)},
                                                    {"q1d", Tensor::Zeros(DType::kF8E4M3, {16})},
                                                    {"q1d_scale_inv", F32Tensor({1}, 1)},
                                                    {"unscaled", Fp8Codes(4, 4)},
                                                    {"badscale", Fp8Codes(4, 4)},
                                                    {"badscale_scale_inv", Bf16Tensor({1, 1}, 1)}})
          .ok());
  auto ckpt = OpenOrDie(dir);
  ASSERT_NE(ckpt, nullptr);
  const struct {
    const char* name;
    std::vector<int64_t> shape;
    absl::StatusCode code;
    const char* says;
  } cases[] = {
      {"missing", {1}, absl::StatusCode::kNotFound, "tensor missing is not in the checkpoint"},
      {"f32",
       {3, 2},
       absl::StatusCode::kInvalidArgument,
       "tensor f32: shape [2,3] but the config implies [3,2]"},
      {"q1d", {16}, absl::StatusCode::kInvalidArgument, "block-scaled FP8 weights must be 2-D"},
      {"unscaled",
       {4, 4},
       absl::StatusCode::kNotFound,
       "F8_E4M3 weight has no scale tensor unscaled_scale_inv"},
      {"badscale",
       {4, 4},
       absl::StatusCode::kInvalidArgument,
       "scale is BF16 [1,1] but the F8_E4M3 weight badscale [4,4] needs F32 [1,1]"},
  };
  for (const auto& c : cases) {
    auto raw = ckpt->ReadRaw(c.name, c.shape);
    auto f32 = ckpt->ReadF32(c.name, c.shape);
    ASSERT_FALSE(raw.ok()) << c.name;
    ASSERT_FALSE(f32.ok()) << c.name;
    EXPECT_EQ(raw.status(), f32.status()) << c.name;
    EXPECT_EQ(raw.status().code(), c.code) << raw.status();
    EXPECT_THAT(raw.status().message(), HasSubstr(c.says));
  }
  EXPECT_EQ(ckpt->stats().tensors_read, 0);
}

}  // namespace
}  // namespace moeserve
