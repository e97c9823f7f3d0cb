#include "tests/runtime/checkpoint/checkpoint_test_util.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/checkpoint/safetensors.h"

namespace moeserve::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

uint64_t ReadLength(const std::string& bytes) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[static_cast<size_t>(i)]);
  return n;
}

std::string EncodeLength(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>(n >> (8 * i));
  return out;
}

}  // namespace

std::string FreshDir() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = std::string(info->test_suite_name()) + "_" + info->name();
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  const fs::path dir = fs::path(::testing::TempDir()) / ("moeserve_ckpt_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  EXPECT_TRUE(out.good()) << path;
}

Tensor F32Tensor(std::vector<int64_t> shape, float base) {
  Tensor t = Tensor::Empty(DType::kF32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = base + 0.25f * static_cast<float>(i);
  return t;
}

Tensor Bf16Tensor(std::vector<int64_t> shape, float base) {
  Tensor t = Tensor::Empty(DType::kBF16, std::move(shape));
  auto* p = static_cast<uint16_t*>(t.raw());
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = F32ToBf16(base + 0.25f * static_cast<float>(i));
  return t;
}

Tensor Fp8Codes(int64_t rows, int64_t cols) {
  Tensor t = Tensor::Empty(DType::kF8E4M3, {rows, cols});
  auto* p = static_cast<uint8_t*>(t.raw());
  // Codes 0x00..0x5f and their negatives: finite, from 0 to 32.
  for (int64_t i = 0; i < rows * cols; ++i) {
    p[i] = static_cast<uint8_t>((i % 0x60) | ((i / 0x60) % 2 ? 0x80 : 0));
  }
  return t;
}

Tensor Fp8Scales(int64_t rows, int64_t cols, int64_t block) {
  const int64_t br = CeilDiv(rows, block);
  const int64_t bc = CeilDiv(cols, block);
  Tensor t = Tensor::Empty(DType::kF32, {br, bc});
  for (int64_t i = 0; i < br; ++i) {
    for (int64_t j = 0; j < bc; ++j) {
      t.f32()[i * bc + j] = 1.0f + static_cast<float>(i) + 0.5f * static_cast<float>(j);
    }
  }
  return t;
}

void WriteSmallCheckpoint(const std::string& dir) {
  const json config = {{"model_type", "deepseek_v3"},
                       {"hidden_size", 4},
                       {"quantization_config",
                        {{"activation_scheme", "dynamic"},
                         {"fmt", "e4m3"},
                         {"quant_method", "fp8"},
                         {"weight_block_size", {128, 128}}}}};
  WriteFile(dir + "/config.json", config.dump(2));
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  ASSERT_TRUE(WriteSafetensors(dir + "/" + kShard1,
                               {{kEmbed, Bf16Tensor({8, 4}, -1.0f)},
                                {kFp8Weight, Fp8Codes(130, 200)},
                                {kFp8Scale, Fp8Scales(130, 200, 128)}},
                               meta)
                  .ok());
  ASSERT_TRUE(WriteSafetensors(dir + "/" + kShard2,
                               {{kNorm, F32Tensor({4}, 0.5f)}, {kFinalNorm, Bf16Tensor({4}, 1.0f)}},
                               meta)
                  .ok());
  json index = {{"metadata", {{"total_size", 0}}},
                {"weight_map",
                 {{kEmbed, kShard1},
                  {kFp8Weight, kShard1},
                  {kFp8Scale, kShard1},
                  {kNorm, kShard2},
                  {kFinalNorm, kShard2}}}};
  WriteFile(dir + "/model.safetensors.index.json", index.dump(2));
}

void ReplaceHeaderText(const std::string& path, const std::string& header_text) {
  const std::string bytes = ReadFile(path);
  ASSERT_GE(bytes.size(), 8u);
  const uint64_t n = ReadLength(bytes);
  ASSERT_LE(8 + n, bytes.size());
  WriteFile(path, EncodeLength(header_text.size()) + header_text + bytes.substr(8 + n));
}

void EditHeader(const std::string& path, const std::function<void(json&)>& edit) {
  const std::string bytes = ReadFile(path);
  const uint64_t n = ReadLength(bytes);
  json header = json::parse(bytes.substr(8, n));
  edit(header);
  ReplaceHeaderText(path, header.dump());
}

void SetHeaderLength(const std::string& path, uint64_t length) {
  std::string bytes = ReadFile(path);
  bytes.replace(0, 8, EncodeLength(length));
  WriteFile(path, bytes);
}

}  // namespace moeserve::testing
