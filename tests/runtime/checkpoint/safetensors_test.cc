// SafetensorsFile and WriteSafetensors: round trips and header validation of
// single files. Whole-checkpoint errors are in checkpoint_errors_test.cc.
#include "runtime/checkpoint/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include "nlohmann/json.hpp"
#include "tests/runtime/checkpoint/checkpoint_test_util.h"

namespace moeserve {
namespace {

using ::moeserve::testing::Bf16Tensor;
using ::moeserve::testing::EditHeader;
using ::moeserve::testing::F32Tensor;
using ::moeserve::testing::Fp8Codes;
using ::moeserve::testing::FreshDir;
using ::moeserve::testing::ReadFile;
using ::moeserve::testing::ReplaceHeaderText;
using ::moeserve::testing::SetHeaderLength;
using ::moeserve::testing::WriteFile;
using nlohmann::json;
using ::testing::HasSubstr;

bool SameBytes(std::span<const std::byte> a, const Tensor& t) {
  return a.size() == t.nbytes() && std::memcmp(a.data(), t.raw(), a.size()) == 0;
}

// A valid two-tensor file to damage.
std::string WriteTwoTensors(const std::string& dir) {
  const std::string path = dir + "/two.safetensors";
  EXPECT_TRUE(
      WriteSafetensors(path, {{"a.weight", Bf16Tensor({2, 3}, 0)}, {"b.weight", F32Tensor({4}, 1)}})
          .ok());
  return path;
}

TEST(SafetensorsTest, RoundTripKeepsOrderBytesAndMetadata) {
  const std::string path = FreshDir() + "/x.safetensors";
  const Tensor a = Bf16Tensor({3, 5}, -2.0f);
  const Tensor b = F32Tensor({7}, 0.5f);
  const Tensor c = Fp8Codes(2, 9);
  const Tensor empty = Tensor::Empty(DType::kF32, {0, 4});
  ASSERT_TRUE(
      WriteSafetensors(path, {{"z.a", a}, {"m.b", b}, {"a.c", c}, {"e", empty}}, {{"format", "pt"}})
          .ok());

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsFile& f = **file;
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(f.tensors().size(), 4u);
  // Data order is the order given, offsets contiguous from 0.
  EXPECT_EQ(f.tensors()[0].name, "z.a");
  EXPECT_EQ(f.tensors()[1].name, "m.b");
  EXPECT_EQ(f.tensors()[2].name, "a.c");
  uint64_t offset = 0;
  for (const TensorInfo& t : f.tensors()) {
    EXPECT_EQ(t.begin, offset) << t.name;
    offset = t.end;
  }
  const TensorInfo* ia = f.Find("z.a");
  ASSERT_NE(ia, nullptr);
  EXPECT_EQ(ia->dtype, DType::kBF16);
  EXPECT_EQ(ia->shape, (std::vector<int64_t>{3, 5}));
  EXPECT_TRUE(SameBytes(f.Data(*ia), a));
  EXPECT_EQ(f.Find("m.b")->dtype, DType::kF32);
  EXPECT_TRUE(SameBytes(f.Data(*f.Find("m.b")), b));
  EXPECT_EQ(f.Find("a.c")->dtype, DType::kF8E4M3);
  EXPECT_TRUE(SameBytes(f.Data(*f.Find("a.c")), c));
  EXPECT_EQ(f.Find("e")->shape, (std::vector<int64_t>{0, 4}));
  EXPECT_TRUE(f.Data(*f.Find("e")).empty());
  EXPECT_EQ(f.Find("nope"), nullptr);

  // The header is space-padded so the data section starts 8-byte aligned,
  // and the file ends with the data.
  const std::string bytes = ReadFile(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + n + offset);
  EXPECT_EQ(bytes.substr(8, 1), "{");
  EXPECT_EQ(json::parse(bytes.substr(8, n)).begin().key(), "__metadata__");
}

TEST(SafetensorsTest, EmptyFileRoundTrips) {
  const std::string path = FreshDir() + "/empty.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, {}).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->tensors().empty());
}

TEST(SafetensorsTest, WriterRejectsRepeatedNames) {
  const std::string path = FreshDir() + "/dup.safetensors";
  absl::Status s = WriteSafetensors(path, {{"w", F32Tensor({1}, 0)}, {"w", F32Tensor({1}, 0)}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("\"w\""));
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  auto file = SafetensorsFile::Open(FreshDir() + "/absent.safetensors");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(file.status().message(), HasSubstr("absent.safetensors"));
}

TEST(SafetensorsTest, FileShorterThanLengthField) {
  const std::string path = FreshDir() + "/short.safetensors";
  WriteFile(path, "abc");
  auto file = SafetensorsFile::Open(path);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(file.status().message(), HasSubstr("short.safetensors"));
}

TEST(SafetensorsTest, HeaderLengthOutsideSaneRange) {
  const std::string path = WriteTwoTensors(FreshDir());
  for (uint64_t n : {uint64_t{0}, uint64_t{7}, (uint64_t{100} << 20) + 1, ~uint64_t{0}}) {
    SetHeaderLength(path, n);
    auto file = SafetensorsFile::Open(path);
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << n;
    EXPECT_THAT(file.status().message(), HasSubstr("header length " + std::to_string(n)));
  }
}

TEST(SafetensorsTest, HeaderNotAnObject) {
  const std::string path = WriteTwoTensors(FreshDir());
  ReplaceHeaderText(path, "[1, 2, 3]       ");
  auto file = SafetensorsFile::Open(path);
  EXPECT_THAT(file.status().message(), HasSubstr("expected an object"));
}

TEST(SafetensorsTest, BadShapesAndOffsetsAreRejected) {
  const std::string dir = FreshDir();
  struct Case {
    json entry;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {{{"dtype", "F32"}, {"shape", {-1}}, {"data_offsets", {0, 16}}}, "non-negative"},
      {{{"dtype", "F32"}, {"shape", {2.5}}, {"data_offsets", {0, 16}}}, "non-negative"},
      {{{"dtype", "F32"}, {"shape", "4"}, {"data_offsets", {0, 16}}}, "\"shape\""},
      {{{"dtype", 3}, {"shape", {4}}, {"data_offsets", {0, 16}}}, "\"dtype\""},
      {{{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {16, 0}}}, "begin after end"},
      {{{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0}}}, "data_offsets"},
      {{{"dtype", "F32"}, {"shape", {4}}}, "data_offsets"},
      {{{"dtype", "F32"},
        {"shape", {uint64_t{1} << 40, uint64_t{1} << 40}},
        {"data_offsets", {0, 16}}},
       "overflows"},
      {"not an object", "expected an object"},
  };
  for (const Case& c : cases) {
    const std::string path = WriteTwoTensors(dir);
    EditHeader(path, [&](json& h) { h["b.weight"] = c.entry; });
    auto file = SafetensorsFile::Open(path);
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << c.entry.dump();
    EXPECT_THAT(file.status().message(), HasSubstr("tensor b.weight")) << c.entry.dump();
    EXPECT_THAT(file.status().message(), HasSubstr(c.expect)) << c.entry.dump();
  }
}

// Found by tests/fuzz/fuzz_safetensors_header: a shape dimension nested
// 100k levels deep overflowed the stack when the error message dumped it.
TEST(SafetensorsTest, HeaderNestedTooDeep) {
  const std::string path = WriteTwoTensors(FreshDir());
  const int depth = 100000;
  ReplaceHeaderText(path, R"({"t": {"dtype": "F32", "shape": [)" + std::string(depth, '[') +
                              std::string(depth, ']') + R"(], "data_offsets": [0, 0]}})");
  auto file = SafetensorsFile::Open(path);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr("header: JSON nested deeper than 64 levels"));
  EXPECT_THAT(file.status().message(), HasSubstr(path));
}

TEST(SafetensorsTest, MetadataMustBeStrings) {
  const std::string path = WriteTwoTensors(FreshDir());
  EditHeader(path, [](json& h) { h["__metadata__"] = {{"format", 1}}; });
  auto file = SafetensorsFile::Open(path);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr("__metadata__"));
}

TEST(SafetensorsTest, HolesBetweenTensorsAreAllowed) {
  // Only overlaps are errors; unreferenced bytes are tolerated.
  const std::string path = WriteTwoTensors(FreshDir());
  EditHeader(path, [](json& h) {
    h["a.weight"] = {{"dtype", "BF16"}, {"shape", {2}}, {"data_offsets", {0, 4}}};
  });
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->Find("a.weight")->end, 4u);
}

}  // namespace
}  // namespace moeserve
