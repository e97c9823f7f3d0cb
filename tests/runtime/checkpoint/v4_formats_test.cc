// DeepSeek-V4's storage formats through the checkpoint layer, on small
// hand-made checkpoints: FP8 weights with ".scale" E8M0 (or float32) block
// scales, FP4 e2m1 experts packed in I8 with E8M0 scales per 32 inputs, and
// I64 hash-routing tables; and the errors each kind of damage gives.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "runtime/checkpoint/checkpoint.h"
#include "runtime/checkpoint/safetensors.h"
#include "tests/runtime/checkpoint/checkpoint_test_util.h"

namespace moeserve {
namespace {

using ::moeserve::testing::Fp8Codes;
using ::moeserve::testing::FreshDir;
using ::moeserve::testing::WriteFile;
using ::testing::AllOf;
using ::testing::HasSubstr;

using Tensors = std::vector<std::pair<std::string, Tensor>>;

// E8M0 scale codes: entry i is 2^(i - 2), codes 125, 126, ...
Tensor E8M0Scales(std::vector<int64_t> shape) {
  Tensor t = Tensor::Empty(DType::kF8E8M0, std::move(shape));
  auto* p = static_cast<uint8_t*>(t.raw());
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<uint8_t>(125 + i % 8);
  return t;
}

// [rows, cols / 2] bytes of FP4 codes: byte j of a row holds codes
// (r + 2j) % 16 (low nibble) and (r + 2j + 1) % 16 (high).
Tensor Fp4Packed(int64_t rows, int64_t cols) {
  Tensor t = Tensor::Empty(DType::kI8, {rows, cols / 2});
  auto* p = static_cast<uint8_t*>(t.raw());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols / 2; ++j) {
      const auto lo = static_cast<uint8_t>((r + 2 * j) % 16);
      const auto hi = static_cast<uint8_t>((r + 2 * j + 1) % 16);
      p[r * (cols / 2) + j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
  return t;
}

Tensor I64Table(int64_t rows, int64_t cols, int64_t modulo) {
  Tensor t = Tensor::Empty(DType::kI64, {rows, cols});
  auto* p = static_cast<int64_t*>(t.raw());
  for (int64_t i = 0; i < rows * cols; ++i) p[i] = i % modulo;
  return t;
}

// One shard, no index: config.json with the V4 quantization_config.
std::string WriteCheckpoint(const Tensors& tensors) {
  const std::string dir = FreshDir();
  WriteFile(dir + "/config.json",
            R"({"quantization_config": {"quant_method": "fp8", "fmt": "e4m3",
                "scale_fmt": "ue8m0", "weight_block_size": [128, 128]}})");
  EXPECT_TRUE(WriteSafetensors(dir + "/model.safetensors", tensors).ok());
  return dir;
}

std::unique_ptr<Checkpoint> Open(const std::string& dir) {
  auto c = Checkpoint::Open(dir);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *std::move(c) : nullptr;
}

TEST(V4FormatsTest, Fp8WithE8M0BlockScales) {
  auto ckpt =
      Open(WriteCheckpoint({{"a.weight", Fp8Codes(130, 200)}, {"a.scale", E8M0Scales({2, 2})}}));
  ASSERT_NE(ckpt, nullptr);
  const std::vector<int64_t> shape = {130, 200};
  auto layout = ckpt->CheckWeight("a.weight", shape);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->dtype, DType::kF8E4M3);
  EXPECT_EQ(layout->scale_name, "a.scale");
  EXPECT_EQ(layout->scale_dtype, DType::kF8E8M0);
  EXPECT_EQ(layout->block, 128);

  auto w = ckpt->ReadF32("a.weight", shape);
  ASSERT_TRUE(w.ok()) << w.status();
  const Tensor codes = Fp8Codes(130, 200);
  const auto* q = static_cast<const uint8_t*>(codes.raw());
  // Block (i, j) has scale code 125 + 2i + j, i.e. 2^(2i + j - 2); the
  // product of an e4m3 value and a power of two is exact.
  for (int64_t r = 0; r < 130; ++r) {
    for (int64_t c = 0; c < 200; ++c) {
      const float scale = std::ldexp(1.0f, static_cast<int>(2 * (r / 128) + c / 128) - 2);
      ASSERT_EQ(w->f32()[r * 200 + c], Fp8E4M3ToF32(q[r * 200 + c]) * scale) << r << "," << c;
    }
  }
}

TEST(V4FormatsTest, Fp8WithFloat32Scales) {
  Tensor scale = Tensor::FromF32({1, 1}, {0.375f});
  auto ckpt = Open(WriteCheckpoint({{"b.weight", Fp8Codes(4, 8)}, {"b.scale", scale}}));
  ASSERT_NE(ckpt, nullptr);
  const std::vector<int64_t> shape = {4, 8};
  auto w = ckpt->ReadF32("b.weight", shape);
  ASSERT_TRUE(w.ok()) << w.status();
  const Tensor codes = Fp8Codes(4, 8);
  for (int64_t i = 0; i < 32; ++i) {
    EXPECT_EQ(w->f32()[i], Fp8E4M3ToF32(static_cast<const uint8_t*>(codes.raw())[i]) * 0.375f);
  }
}

TEST(V4FormatsTest, Fp4ExpertWithE8M0ScalesPer32Inputs) {
  const int64_t rows = 3, cols = 96;  // 48 bytes a row, 3 scales a row
  auto ckpt = Open(WriteCheckpoint(
      {{"e.w1.weight", Fp4Packed(rows, cols)}, {"e.w1.scale", E8M0Scales({rows, cols / 32})}}));
  ASSERT_NE(ckpt, nullptr);
  const std::vector<int64_t> shape = {rows, cols};
  auto layout = ckpt->CheckWeight("e.w1.weight", shape);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->dtype, DType::kF4E2M1x2);
  EXPECT_EQ(layout->shape, (std::vector<int64_t>{rows, cols / 2}));
  EXPECT_EQ(layout->block, kFp4ScaleBlock);

  auto w = ckpt->ReadF32("e.w1.weight", shape);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ(w->shape(), shape);
  // Element (r, c) is code (r + c) % 16 times 2^((3r + c/32) % 8 - 2),
  // decoded here from the e2m1 definition, not the library's table.
  const float magnitudes[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t code = (r + c) % 16;
      const float value = code < 8 ? magnitudes[code] : -magnitudes[code - 8];
      const float scale = std::ldexp(1.0f, static_cast<int>((3 * r + c / 32) % 8) - 2);
      ASSERT_EQ(w->f32()[r * cols + c], value * scale) << r << "," << c;
    }
  }
}

TEST(V4FormatsTest, Fp4ShapeAndScaleErrorsNameTheTensor) {
  auto ckpt = Open(WriteCheckpoint({{"e.w1.weight", Fp4Packed(3, 96)},
                                    {"e.w1.scale", E8M0Scales({3, 2})},  // 96 inputs need 3
                                    {"e.w2.weight", Fp4Packed(3, 64)}}));
  ASSERT_NE(ckpt, nullptr);
  const std::vector<int64_t> wrong = {3, 128};
  auto a = ckpt->ReadRaw("e.w1.weight", wrong);
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(
      a.status().message(),
      AllOf(HasSubstr("model.safetensors: tensor e.w1.weight"), HasSubstr("I8 shape [3,48]"),
            HasSubstr("config's [3,128]"), HasSubstr("expected I8 [3,64]")));

  const std::vector<int64_t> right = {3, 96};
  auto b = ckpt->ReadRaw("e.w1.weight", right);
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(b.status().message(),
              AllOf(HasSubstr("tensor e.w1.scale"), HasSubstr("F8_E8M0 [3,2]"),
                    HasSubstr("needs F8_E8M0 or F32 [3,3]"), HasSubstr("per 32 inputs of 96")));

  const std::vector<int64_t> w2 = {3, 64};
  auto c = ckpt->ReadRaw("e.w2.weight", w2);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(c.status().message(),
              AllOf(HasSubstr("tensor e.w2.weight"), HasSubstr("no scale tensor"),
                    HasSubstr("e.w2.weight_scale_inv or e.w2.scale")));
}

TEST(V4FormatsTest, NaNScaleIsAnError) {
  Tensor scale = E8M0Scales({1, 2});
  static_cast<uint8_t*>(scale.raw())[1] = 0xff;
  auto ckpt = Open(WriteCheckpoint({{"e.weight", Fp4Packed(1, 64)}, {"e.scale", scale}}));
  ASSERT_NE(ckpt, nullptr);
  const std::vector<int64_t> shape = {1, 64};
  EXPECT_TRUE(ckpt->CheckWeight("e.weight", shape).ok());  // headers only: no data looked at
  auto w = ckpt->ReadF32("e.weight", shape);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(w.status().message(),
              AllOf(HasSubstr("tensor e.scale"), HasSubstr("entry [0,1] is 0xff"),
                    HasSubstr("NaN in F8_E8M0"), HasSubstr("e.weight")));
}

TEST(V4FormatsTest, TwoScaleNamesAreAmbiguous) {
  Tensor f32 = Tensor::FromF32({1, 1}, {1.0f});
  auto ckpt = Open(WriteCheckpoint({{"a.weight", Fp8Codes(4, 4)},
                                    {"a.scale", E8M0Scales({1, 1})},
                                    {"a.weight_scale_inv", f32}}));
  ASSERT_NE(ckpt, nullptr);
  const std::vector<int64_t> shape = {4, 4};
  auto w = ckpt->ReadRaw("a.weight", shape);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(w.status().message(), HasSubstr("two scale tensors, a.weight_scale_inv and a.scale"));
}

TEST(V4FormatsTest, V3ScaleInvStaysFloat32) {
  auto ckpt = Open(
      WriteCheckpoint({{"a.weight", Fp8Codes(4, 4)}, {"a.weight_scale_inv", E8M0Scales({1, 1})}}));
  ASSERT_NE(ckpt, nullptr);
  const std::vector<int64_t> shape = {4, 4};
  auto w = ckpt->ReadRaw("a.weight", shape);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(w.status().message(), HasSubstr("scale is F8_E8M0 [1,1] but the F8_E4M3 weight "
                                              "a.weight [4,4] needs F32 [1,1]"));
}

TEST(V4FormatsTest, IdTablesAreRangeChecked) {
  auto ckpt = Open(WriteCheckpoint({{"ok.tid2eid", I64Table(10, 4, 16)},
                                    {"bad.tid2eid", I64Table(10, 4, 17)},
                                    {"f32.tid2eid", Tensor::FromF32({2}, {0.0f, 1.0f})}}));
  ASSERT_NE(ckpt, nullptr);
  const std::vector<int64_t> shape = {10, 4};
  auto ids = ckpt->ReadIds("ok.tid2eid", shape, 16, "n_routed_experts");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->dtype(), DType::kI32);
  EXPECT_EQ(ids->shape(), shape);
  for (int64_t i = 0; i < 40; ++i) EXPECT_EQ(static_cast<const int32_t*>(ids->raw())[i], i % 16);

  // Entry 16 (row 4, column 0) is the first that reaches 16.
  auto bad = ckpt->ReadIds("bad.tid2eid", shape, 16, "n_routed_experts");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(),
              AllOf(HasSubstr("tensor bad.tid2eid"), HasSubstr("value 16 at [4,0]"),
                    HasSubstr("outside [0, 16), the range of n_routed_experts")));

  const std::vector<int64_t> other = {10, 3};
  EXPECT_THAT(ckpt->ReadIds("ok.tid2eid", other, 16, "x").status().message(),
              HasSubstr("shape [10,4] but the config implies [10,3]"));
  const std::vector<int64_t> two = {2};
  EXPECT_THAT(ckpt->ReadIds("f32.tid2eid", two, 16, "x").status().message(),
              HasSubstr("dtype F32; a table of ids is I64 or I32"));
}

TEST(V4FormatsTest, AnI64TensorIsNoWeight) {
  auto ckpt = Open(WriteCheckpoint({{"t.tid2eid", I64Table(2, 2, 4)}}));
  ASSERT_NE(ckpt, nullptr);
  const std::vector<int64_t> shape = {2, 2};
  EXPECT_THAT(ckpt->ReadF32("t.tid2eid", shape).status().message(),
              HasSubstr("dtype I64 is not supported for a weight"));
}

}  // namespace
}  // namespace moeserve
