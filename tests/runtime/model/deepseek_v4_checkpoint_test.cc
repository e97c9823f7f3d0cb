// The published DeepSeek-V4 layout (the deepseek_v4_small fixture) through
// the checkpoint layer: every tensor read and every name accounted for,
// dequantized weights against an independent decoding of their raw bytes,
// damaged copies with precise errors, and the precise refusal to serve.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "kernels/cpu/cpu_backend.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/model/deepseek_v4_weights.h"
#include "runtime/model/model.h"
#include "tests/runtime/checkpoint/checkpoint_test_util.h"

namespace moeserve {
namespace {

namespace fs = std::filesystem;
using ::moeserve::testing::FreshDir;
using ::moeserve::testing::ReadFile;
using ::moeserve::testing::WriteFile;
using nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;

const std::string kFixture = std::string(MOESERVE_FIXTURES_DIR) + "/deepseek_v4_small";

struct Opened {
  std::unique_ptr<Checkpoint> checkpoint;
  ModelConfig config;
};

Opened Open(const std::string& dir) {
  auto ckpt = Checkpoint::Open(dir);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status();
  if (!ckpt.ok()) return {};
  auto config = ParseModelConfig((*ckpt)->config_json());
  EXPECT_TRUE(config.ok()) << config.status();
  return {*std::move(ckpt), config.ok() ? *config : ModelConfig{}};
}

// A writable copy of the fixture.
std::string CopyFixture() {
  const std::string dir = FreshDir();
  for (const auto& entry : fs::directory_iterator(kFixture)) {
    const fs::path to = fs::path(dir) / entry.path().filename();
    fs::copy_file(entry.path(), to);
    fs::permissions(to, fs::perms::owner_read | fs::perms::owner_write);
  }
  return dir;
}

std::string ShardOf(const std::string& dir, const std::string& tensor) {
  std::ifstream in(dir + "/model.safetensors.index.json");
  return dir + "/" + json::parse(in)["weight_map"][tensor].get<std::string>();
}

// The raw bytes of a tensor, found by parsing the shard's header here.
std::string RawBytes(const std::string& shard_path, const std::string& tensor) {
  const std::string file = ReadFile(shard_path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(file[static_cast<size_t>(i)]);
  const json header = json::parse(file.substr(8, n));
  const auto begin = header[tensor]["data_offsets"][0].get<size_t>();
  const auto end = header[tensor]["data_offsets"][1].get<size_t>();
  return file.substr(8 + n + begin, end - begin);
}

// Overwrites bytes of a tensor in place.
void PatchBytes(const std::string& shard_path, const std::string& tensor, size_t offset,
                const void* bytes, size_t size) {
  std::string file = ReadFile(shard_path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(file[static_cast<size_t>(i)]);
  const json header = json::parse(file.substr(8, n));
  const auto begin = header[tensor]["data_offsets"][0].get<size_t>();
  std::memcpy(file.data() + 8 + n + begin + offset, bytes, size);
  WriteFile(shard_path, file);
}

TEST(DeepseekV4CheckpointTest, ReadsEveryTensorAndAccountsForEveryName) {
  Opened o = Open(kFixture);
  ASSERT_NE(o.checkpoint, nullptr);
  std::set<std::string> read;
  int64_t mtp = 0, experts = 0, tables = 0;
  for (const V4Tensor& t : DeepseekV4Tensors(o.config)) {
    mtp += t.mtp;
    if (t.kind == V4TensorKind::kExpertIds) {
      auto ids = o.checkpoint->ReadIds(t.name, t.shape, o.config.n_routed_experts, "experts");
      ASSERT_TRUE(ids.ok()) << ids.status();
      ++tables;
      read.insert(t.name);
      continue;
    }
    auto layout = o.checkpoint->CheckWeight(t.name, t.shape);
    ASSERT_TRUE(layout.ok()) << layout.status();
    if (t.kind == V4TensorKind::kExpert) {
      ++experts;
      EXPECT_EQ(layout->dtype, DType::kF4E2M1x2) << t.name;
      EXPECT_EQ(layout->block, 32) << t.name;
    }
    if (t.kind == V4TensorKind::kFp8Linear) {
      EXPECT_EQ(layout->dtype, DType::kF8E4M3) << t.name;
      EXPECT_EQ(layout->block, 128) << t.name;
    }
    if (!layout->scale_name.empty()) {
      EXPECT_EQ(layout->scale_dtype, DType::kF8E8M0) << t.name;
      EXPECT_TRUE(read.insert(layout->scale_name).second) << layout->scale_name;
    }
    auto w = o.checkpoint->ReadF32(t.name, t.shape);
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_EQ(w->shape(), t.shape) << t.name;
    for (int64_t i = 0; i < w->numel(); ++i) ASSERT_TRUE(std::isfinite(w->f32()[i])) << t.name;
    EXPECT_TRUE(read.insert(t.name).second) << t.name << " listed twice";
  }
  // 4 layers + 1 MTP layer, 16 experts x 3 each; 2 hash layers.
  EXPECT_EQ(experts, 5 * 16 * 3);
  EXPECT_EQ(tables, 2);
  EXPECT_GT(mtp, 0);
  const std::vector<std::string> names = o.checkpoint->TensorNames();
  EXPECT_EQ(names.size(), 667u);  // the index's count
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()), read);

  auto checked = CheckDeepseekV4Checkpoint(*o.checkpoint, o.config);
  ASSERT_TRUE(checked.ok()) << checked.status();
  EXPECT_EQ(*checked, 667);
}

// Element (r, c) of an FP4 expert from its bytes: byte c/2 of row r, low
// nibble for even c; the scale byte (r, c/32) is 2^(byte - 127).
float DecodeFp4ByHand(const std::string& codes, const std::string& scales, int64_t cols, int64_t r,
                      int64_t c) {
  const auto byte = static_cast<uint8_t>(codes[static_cast<size_t>(r * (cols / 2) + c / 2)]);
  const int code = c % 2 == 0 ? (byte & 0xf) : (byte >> 4);
  const float magnitudes[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float value = code < 8 ? magnitudes[code] : -magnitudes[code - 8];
  const auto e = static_cast<uint8_t>(scales[static_cast<size_t>(r * (cols / 32) + c / 32)]);
  return value * std::ldexp(1.0f, e - 127);
}

TEST(DeepseekV4CheckpointTest, Fp4ExpertMatchesItsBytesDecodedByHand) {
  Opened o = Open(kFixture);
  ASSERT_NE(o.checkpoint, nullptr);
  const std::string name = "layers.2.ffn.experts.5.w2.weight";  // [256, 128] as [256, 64] bytes
  const std::string shard = ShardOf(kFixture, name);
  const std::string codes = RawBytes(shard, name);
  const std::string scales = RawBytes(shard, "layers.2.ffn.experts.5.w2.scale");
  ASSERT_EQ(codes.size(), 256u * 64u);
  ASSERT_EQ(scales.size(), 256u * 4u);
  const std::vector<int64_t> shape = {256, 128};
  auto w = o.checkpoint->ReadF32(name, shape);
  ASSERT_TRUE(w.ok()) << w.status();
  int nonzero = 0;
  // Rows and columns that cross bytes, nibbles and scale blocks.
  for (int64_t r : {0, 1, 127, 128, 255}) {
    for (int64_t c : {0, 1, 2, 31, 32, 33, 64, 95, 96, 126, 127}) {
      const float expected = DecodeFp4ByHand(codes, scales, 128, r, c);
      EXPECT_EQ(w->f32()[r * 128 + c], expected) << r << "," << c;  // exact: powers of two
      nonzero += expected != 0.0f;
    }
  }
  EXPECT_GT(nonzero, 20);  // the check compares values, not zeros
}

TEST(DeepseekV4CheckpointTest, Fp8LinearMatchesItsBytesAndE8M0Scales) {
  Opened o = Open(kFixture);
  ASSERT_NE(o.checkpoint, nullptr);
  const std::string name = "layers.1.attn.wo_a.weight";  // [256, 512], scales [2, 4]
  const std::string shard = ShardOf(kFixture, name);
  const std::string codes = RawBytes(shard, name);
  const std::string scales = RawBytes(shard, "layers.1.attn.wo_a.scale");
  const std::vector<int64_t> shape = {256, 512};
  auto w = o.checkpoint->ReadF32(name, shape);
  ASSERT_TRUE(w.ok()) << w.status();
  for (int64_t r : {0, 127, 128, 255}) {
    for (int64_t c : {0, 127, 128, 300, 511}) {
      const auto q = static_cast<uint8_t>(codes[static_cast<size_t>(r * 512 + c)]);
      const auto e = static_cast<uint8_t>(scales[static_cast<size_t>((r / 128) * 4 + c / 128)]);
      EXPECT_EQ(w->f32()[r * 512 + c], Fp8E4M3ToF32(q) * std::ldexp(1.0f, e - 127))
          << r << "," << c;
    }
  }
}

TEST(DeepseekV4CheckpointTest, AnExpertIdOutOfRangeNamesTheTable) {
  const std::string dir = CopyFixture();
  const std::string name = "layers.1.ffn.gate.tid2eid";
  const int64_t bad = 16;                                                    // n_routed_experts
  PatchBytes(ShardOf(dir, name), name, 8 * (7 * 4 + 2), &bad, sizeof(bad));  // entry [7,2]
  Opened o = Open(dir);
  ASSERT_NE(o.checkpoint, nullptr);
  auto checked = CheckDeepseekV4Checkpoint(*o.checkpoint, o.config);
  ASSERT_FALSE(checked.ok());
  EXPECT_THAT(checked.status().message(),
              AllOf(HasSubstr("tensor layers.1.ffn.gate.tid2eid"), HasSubstr("value 16 at [7,2]"),
                    HasSubstr("outside [0, 16)")));
}

TEST(DeepseekV4CheckpointTest, ATruncatedShardNamesTheFileAndTensor) {
  const std::string dir = CopyFixture();
  const std::string shard = ShardOf(dir, "mtp.0.norm.weight");
  fs::resize_file(shard, fs::file_size(shard) - 100);
  Opened o = Open(dir);
  ASSERT_NE(o.checkpoint, nullptr);
  auto checked = CheckDeepseekV4Checkpoint(*o.checkpoint, o.config);
  ASSERT_FALSE(checked.ok());
  EXPECT_EQ(checked.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(checked.status().message(),
              AllOf(HasSubstr("model-00003-of-00003.safetensors"),
                    HasSubstr("extend past the end of the data section")));
}

TEST(DeepseekV4CheckpointTest, AMisshapenTensorNamesTheConfigShape) {
  const std::string dir = CopyFixture();
  json config = json::parse(ReadFile(dir + "/config.json"));
  config["o_lora_rank"] = 64;  // wo_a and wo_b no longer fit
  WriteFile(dir + "/config.json", config.dump());
  Opened o = Open(dir);
  ASSERT_NE(o.checkpoint, nullptr);
  auto checked = CheckDeepseekV4Checkpoint(*o.checkpoint, o.config);
  ASSERT_FALSE(checked.ok());
  EXPECT_THAT(checked.status().message(),
              AllOf(HasSubstr("tensor layers.0.attn.wo_a.weight"),
                    HasSubstr("shape [256,512] but the config implies [128,512]")));
}

TEST(DeepseekV4CheckpointTest, ExpertDtypeMustMatchTheTensors) {
  const std::string dir = CopyFixture();
  json config = json::parse(ReadFile(dir + "/config.json"));
  config["expert_dtype"] = "fp8";
  WriteFile(dir + "/config.json", config.dump());
  Opened o = Open(dir);
  ASSERT_NE(o.checkpoint, nullptr);
  auto checked = CheckDeepseekV4Checkpoint(*o.checkpoint, o.config);
  ASSERT_FALSE(checked.ok());
  EXPECT_THAT(checked.status().message(),
              AllOf(HasSubstr("tensor layers.0.ffn.experts.0.w1.weight: dtype I8"),
                    HasSubstr("expert_dtype \"fp8\"")));
}

TEST(DeepseekV4CheckpointTest, UnknownAndMissingTensorsAreErrors) {
  {
    const std::string dir = CopyFixture();
    Tensor extra = Tensor::FromF32({2}, {1.0f, 2.0f});
    ASSERT_TRUE(
        WriteSafetensors(dir + "/extra.safetensors", {{"layers.0.attn.extra", extra}}).ok());
    json index = json::parse(ReadFile(dir + "/model.safetensors.index.json"));
    index["weight_map"]["layers.0.attn.extra"] = "extra.safetensors";
    WriteFile(dir + "/model.safetensors.index.json", index.dump());
    Opened o = Open(dir);
    ASSERT_NE(o.checkpoint, nullptr);
    auto checked = CheckDeepseekV4Checkpoint(*o.checkpoint, o.config);
    ASSERT_FALSE(checked.ok());
    EXPECT_THAT(checked.status().message(),
                AllOf(HasSubstr("1 tensor(s) that are not part of the DeepSeek-V4 layout"),
                      HasSubstr("layers.0.attn.extra")));
  }
  {
    const std::string dir = CopyFixture();
    json index = json::parse(ReadFile(dir + "/model.safetensors.index.json"));
    index["weight_map"].erase("mtp.0.hnorm.weight");
    WriteFile(dir + "/model.safetensors.index.json", index.dump());
    Opened o = Open(dir);
    ASSERT_NE(o.checkpoint, nullptr);
    auto checked = CheckDeepseekV4Checkpoint(*o.checkpoint, o.config);
    ASSERT_FALSE(checked.ok());
    EXPECT_EQ(checked.status().code(), absl::StatusCode::kNotFound);
    EXPECT_THAT(checked.status().message(), HasSubstr("tensor mtp.0.hnorm.weight is not in"));
  }
}

TEST(DeepseekV4CheckpointTest, ServingIsRefusedWithTheReason) {
  Opened o = Open(kFixture);
  ASSERT_NE(o.checkpoint, nullptr);
  absl::Status s = CheckServable(*o.checkpoint, o.config);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("DeepSeek-V4 checkpoint and config.json read and "
                                           "checked (667 tensors"),
                                 HasSubstr("forward pass is not implemented yet")));
  auto backend = CreateCpuBackend();
  auto model = LoadModel(*o.checkpoint, WeightSelection{}, *backend);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(model.status().message(), HasSubstr("forward pass is not implemented yet"));
}

}  // namespace
}  // namespace moeserve
