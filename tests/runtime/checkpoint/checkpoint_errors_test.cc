// Damaged checkpoints: each must give a clear error that names the file and,
// where there is one, the tensor, and never crash. Each starts from the valid
// checkpoint of WriteSmallCheckpoint and breaks one thing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "nlohmann/json.hpp"
#include "runtime/checkpoint/bounded_json.h"
#include "runtime/checkpoint/checkpoint.h"
#include "tests/runtime/checkpoint/checkpoint_test_util.h"

namespace moeserve {
namespace {

using ::moeserve::testing::EditHeader;
using ::moeserve::testing::F32Tensor;
using ::moeserve::testing::FreshDir;
using ::moeserve::testing::kEmbed;
using ::moeserve::testing::kFinalNorm;
using ::moeserve::testing::kFp8Scale;
using ::moeserve::testing::kFp8Weight;
using ::moeserve::testing::kNorm;
using ::moeserve::testing::kShard1;
using ::moeserve::testing::kShard2;
using ::moeserve::testing::ReadFile;
using ::moeserve::testing::ReplaceHeaderText;
using ::moeserve::testing::SetHeaderLength;
using ::moeserve::testing::WriteFile;
using ::moeserve::testing::WriteSmallCheckpoint;
using nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;

const std::vector<int64_t> kEmbedShape = {8, 4};
const std::vector<int64_t> kFp8Shape = {130, 200};
const std::vector<int64_t> kNormShape = {4};

class CheckpointErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = FreshDir();
    WriteSmallCheckpoint(dir_);
  }
  std::string Path(const std::string& file) const { return dir_ + "/" + file; }

  // Opening must succeed (errors in shards surface when they are read).
  std::unique_ptr<Checkpoint> Open() {
    auto c = Checkpoint::Open(dir_);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }
  absl::Status OpenError() {
    auto c = Checkpoint::Open(dir_);
    EXPECT_FALSE(c.ok());
    return c.status();
  }
  absl::Status ReadError(const std::string& name, const std::vector<int64_t>& shape) {
    auto ckpt = Open();
    if (ckpt == nullptr) return absl::InternalError("open failed");
    auto t = ckpt->ReadF32(name, shape);
    EXPECT_FALSE(t.ok()) << name;
    return t.status();
  }

  std::string dir_;
};

TEST_F(CheckpointErrorsTest, TruncatedShard) {
  const std::string bytes = ReadFile(Path(kShard1));
  WriteFile(Path(kShard1), bytes.substr(0, bytes.size() - 100));  // cut inside the data
  absl::Status s = ReadError(kEmbed, kEmbedShape);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  // The header is intact, so the first tensor past the new end is named.
  EXPECT_THAT(s.message(), AllOf(HasSubstr(kShard1), HasSubstr(kFp8Weight),
                                 HasSubstr("extend past the end of the data section")));
}

TEST_F(CheckpointErrorsTest, HeaderLengthLargerThanFile) {
  const uint64_t size = ReadFile(Path(kShard2)).size();
  SetHeaderLength(Path(kShard2), size);
  absl::Status s = ReadError(kNorm, kNormShape);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr(kShard2), HasSubstr("header length " + std::to_string(size)),
                    HasSubstr("extends past the end of the file")));
}

TEST_F(CheckpointErrorsTest, OffsetsPastTheEnd) {
  EditHeader(Path(kShard2), [](json& h) {
    h[kFinalNorm]["data_offsets"] = {24, 32};  // the data section is 24 bytes
  });
  absl::Status s = ReadError(kNorm, kNormShape);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr(kShard2), HasSubstr("tensor model.norm.weight"),
                    HasSubstr("[24,32) extend past the end of the data section (24 bytes)")));
}

TEST_F(CheckpointErrorsTest, OverlappingRanges) {
  EditHeader(Path(kShard2), [](json& h) { h[kFinalNorm]["data_offsets"] = {8, 16}; });
  absl::Status s = ReadError(kFinalNorm, kNormShape);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(kShard2), HasSubstr(kNorm), HasSubstr(kFinalNorm),
                                 HasSubstr("overlap")));
}

TEST_F(CheckpointErrorsTest, UnknownDtype) {
  for (const char* dtype : {"F16", "U8", "F8_E5M2", "bf16"}) {
    EditHeader(Path(kShard2), [&](json& h) { h[kNorm]["dtype"] = dtype; });
    absl::Status s = ReadError(kFinalNorm, kNormShape);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), AllOf(HasSubstr(kShard2), HasSubstr(kNorm),
                                   HasSubstr(std::string("unsupported dtype \"") + dtype)));
  }
}

TEST_F(CheckpointErrorsTest, ShapeTimesElementSizeMismatch) {
  EditHeader(Path(kShard2), [](json& h) { h[kNorm]["shape"] = {5}; });
  absl::Status s = ReadError(kNorm, kNormShape);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(kShard2), HasSubstr(kNorm),
                                 HasSubstr("shape [5] of F32 is 20 bytes but data_offsets [0,16) "
                                           "span 16 bytes")));
}

TEST_F(CheckpointErrorsTest, TensorListedInIndexButAbsentFromShard) {
  json index = json::parse(ReadFile(Path("model.safetensors.index.json")));
  index["weight_map"]["model.layers.1.ghost.weight"] = kShard2;
  WriteFile(Path("model.safetensors.index.json"), index.dump());
  auto ckpt = Open();
  ASSERT_NE(ckpt, nullptr);
  EXPECT_TRUE(ckpt->Has("model.layers.1.ghost.weight"));
  auto t = ckpt->ReadF32("model.layers.1.ghost.weight", kNormShape);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(t.status().message(),
              AllOf(HasSubstr(kShard2), HasSubstr("model.layers.1.ghost.weight"),
                    HasSubstr("model.safetensors.index.json")));
}

TEST_F(CheckpointErrorsTest, TensorMissingFromIndex) {
  absl::Status s = ReadError("model.layers.9.mlp.gate.weight", {16, 4});
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("model.layers.9.mlp.gate.weight"),
                                 HasSubstr("model.safetensors.index.json")));
}

TEST_F(CheckpointErrorsTest, ShapeContradictsTheConfig) {
  absl::Status s = ReadError(kEmbed, {8, 5});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr(kShard1),
                    HasSubstr("tensor model.embed_tokens.weight: shape [8,4] but the config "
                              "implies [8,5]")));
  s = ReadError(kNorm, {});
  EXPECT_THAT(s.message(), HasSubstr("shape [4] but the config implies []"));
}

TEST_F(CheckpointErrorsTest, MalformedConfigJson) {
  WriteFile(Path("config.json"), "{\n  \"hidden_size\": 4,\n  \"vocab_size\": }\n");
  absl::Status s = OpenError();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("config.json"), HasSubstr("line 3")));
}

// Found by tests/fuzz/fuzz_model_config: a value nested 100k levels deep
// overflowed the stack when the error message dumped it.
TEST_F(CheckpointErrorsTest, ConfigJsonNestedTooDeep) {
  const int depth = 100000;
  WriteFile(Path("config.json"),
            "{\"quantization_config\": " + std::string(depth, '[') + std::string(depth, ']') + "}");
  absl::Status s = OpenError();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr("config.json"), HasSubstr("nested deeper than 64 levels")));
  // The bound is 64 levels, the top-level container included.
  EXPECT_TRUE(ParseBoundedJson(std::string(64, '[') + std::string(64, ']')).ok());
  EXPECT_FALSE(ParseBoundedJson(std::string(65, '[') + std::string(65, ']')).ok());
}

TEST_F(CheckpointErrorsTest, ConfigJsonNotAnObject) {
  WriteFile(Path("config.json"), "[1, 2]");
  EXPECT_THAT(OpenError().message(), AllOf(HasSubstr("config.json"), HasSubstr("object")));
}

TEST_F(CheckpointErrorsTest, MissingConfigJson) {
  std::filesystem::remove(Path("config.json"));
  absl::Status s = OpenError();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("config.json"));
}

TEST_F(CheckpointErrorsTest, BadWeightBlockSize) {
  for (const char* block : {"[128, 64]", "[0, 0]", "[128]", "\"128\"", "[-128, -128]"}) {
    WriteFile(Path("config.json"),
              std::string(R"({"quantization_config": {"weight_block_size": )") + block + "}}");
    EXPECT_THAT(OpenError().message(),
                AllOf(HasSubstr("config.json"), HasSubstr("weight_block_size")))
        << block;
  }
}

TEST_F(CheckpointErrorsTest, MalformedIndexJson) {
  WriteFile(Path("model.safetensors.index.json"), "{\"weight_map\": {\"a\": ");
  absl::Status s = OpenError();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("model.safetensors.index.json"), HasSubstr("line 1")));
}

TEST_F(CheckpointErrorsTest, IndexWithoutWeightMap) {
  WriteFile(Path("model.safetensors.index.json"), R"({"metadata": {}})");
  EXPECT_THAT(OpenError().message(),
              AllOf(HasSubstr("model.safetensors.index.json"), HasSubstr("weight_map")));
}

TEST_F(CheckpointErrorsTest, IndexShardNameLeavesTheDirectory) {
  for (const char* file : {"../model-00001-of-00002.safetensors", "sub/x.safetensors", ""}) {
    json index = json::parse(ReadFile(Path("model.safetensors.index.json")));
    index["weight_map"][kNorm] = file;
    WriteFile(Path("model.safetensors.index.json"), index.dump());
    EXPECT_THAT(OpenError().message(), AllOf(HasSubstr("model.safetensors.index.json"),
                                             HasSubstr(kNorm), HasSubstr("plain file name")));
  }
}

TEST_F(CheckpointErrorsTest, MalformedHeaderJson) {
  ReplaceHeaderText(Path(kShard2), "{\"model.norm.weight\": {\"dtype\": \"F32\",, }");
  absl::Status s = ReadError(kNorm, kNormShape);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(kShard2), HasSubstr("header: malformed JSON")));
}

TEST_F(CheckpointErrorsTest, Fp8WeightWithoutScale) {
  json index = json::parse(ReadFile(Path("model.safetensors.index.json")));
  index["weight_map"].erase(kFp8Scale);
  WriteFile(Path("model.safetensors.index.json"), index.dump());
  absl::Status s = ReadError(kFp8Weight, kFp8Shape);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(kShard1), HasSubstr(kFp8Scale),
                                 HasSubstr("tensor " + std::string(kFp8Weight))));
}

TEST_F(CheckpointErrorsTest, ScaleWithWrongShape) {
  EditHeader(Path(kShard1), [](json& h) { h[kFp8Scale]["shape"] = {4, 1}; });  // same 16 bytes
  absl::Status s = ReadError(kFp8Weight, kFp8Shape);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(kShard1), HasSubstr(kFp8Scale), HasSubstr("F32 [4,1]"),
                                 HasSubstr("needs F32 [2,2]")));
}

TEST_F(CheckpointErrorsTest, ScaleWithWrongDtype) {
  EditHeader(Path(kShard1), [](json& h) {
    h[kFp8Scale]["dtype"] = "BF16";
    h[kFp8Scale]["shape"] = {2, 4};
  });
  absl::Status s = ReadError(kFp8Weight, kFp8Shape);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(kFp8Scale), HasSubstr("BF16 [2,4]")));
}

TEST_F(CheckpointErrorsTest, Fp8WeightThatIsNot2D) {
  EditHeader(Path(kShard1), [](json& h) { h[kFp8Weight]["shape"] = {26000}; });
  absl::Status s = ReadError(kFp8Weight, {26000});
  EXPECT_THAT(s.message(), AllOf(HasSubstr(kShard1), HasSubstr(kFp8Weight), HasSubstr("2-D")));
}

TEST_F(CheckpointErrorsTest, IndexNamesAShardThatDoesNotExist) {
  std::filesystem::remove(Path(kShard2));
  absl::Status s = OpenError();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("model.safetensors.index.json"), HasSubstr(kShard2),
                                 HasSubstr("does not exist")));
}

TEST_F(CheckpointErrorsTest, NeitherIndexNorSingleFile) {
  std::filesystem::remove(Path("model.safetensors.index.json"));
  absl::Status s = OpenError();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr("model.safetensors.index.json"), HasSubstr("model.safetensors ")));
}

TEST_F(CheckpointErrorsTest, BrokenSingleFileFailsAtOpen) {
  std::filesystem::remove(Path("model.safetensors.index.json"));
  WriteFile(Path("model.safetensors"), std::string(8, '\xff'));
  absl::Status s = OpenError();
  EXPECT_THAT(s.message(), HasSubstr("model.safetensors: header length"));
}

TEST_F(CheckpointErrorsTest, ABrokenShardDoesNotStopReadingTheOther) {
  SetHeaderLength(Path(kShard2), 1u << 30);
  auto ckpt = Open();
  ASSERT_NE(ckpt, nullptr);
  EXPECT_TRUE(ckpt->ReadF32(kEmbed, kEmbedShape).ok());
  EXPECT_FALSE(ckpt->ReadF32(kNorm, kNormShape).ok());
  EXPECT_FALSE(ckpt->ReadF32(kNorm, kNormShape).ok());  // and stays an error
  EXPECT_EQ(ckpt->stats().shards_opened, 1);
}

}  // namespace
}  // namespace moeserve
