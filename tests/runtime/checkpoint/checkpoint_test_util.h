// Helpers for the checkpoint tests: small tensors, a small valid checkpoint
// to start from, and ways to damage files on purpose.
#ifndef MOESERVE_TESTS_RUNTIME_CHECKPOINT_CHECKPOINT_TEST_UTIL_H_
#define MOESERVE_TESTS_RUNTIME_CHECKPOINT_CHECKPOINT_TEST_UTIL_H_

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "kernels/tensor.h"
#include "nlohmann/json.hpp"

namespace moeserve::testing {

// An empty directory under ::testing::TempDir(), unique to the running test.
std::string FreshDir();

std::string ReadFile(const std::string& path);
void WriteFile(const std::string& path, const std::string& bytes);

// Deterministic, distinct values: value i of a tensor is `base + 0.25 * i`
// (exactly representable in bf16 for the small sizes used).
Tensor F32Tensor(std::vector<int64_t> shape, float base);
Tensor Bf16Tensor(std::vector<int64_t> shape, float base);
// Raw e4m3 codes cycling through small finite values, and a [ceil(r/b),
// ceil(c/b)] scale grid whose block (i, j) holds 1 + i + 0.5 j.
Tensor Fp8Codes(int64_t rows, int64_t cols);
Tensor Fp8Scales(int64_t rows, int64_t cols, int64_t block);

// The names of the small checkpoint WriteSmallCheckpoint builds.
inline constexpr char kEmbed[] = "model.embed_tokens.weight";  // BF16 [8,4], shard 1
inline constexpr char kFp8Weight[] =
    "model.layers.0.mlp.down_proj.weight";  // F8 [130,200], shard 1
inline constexpr char kFp8Scale[] = "model.layers.0.mlp.down_proj.weight_scale_inv";  // [2,2]
inline constexpr char kNorm[] = "model.layers.1.input_layernorm.weight";  // F32 [4], shard 2
inline constexpr char kFinalNorm[] = "model.norm.weight";                 // BF16 [4], shard 2
inline constexpr char kShard1[] = "model-00001-of-00002.safetensors";
inline constexpr char kShard2[] = "model-00002-of-00002.safetensors";

// config.json (with an fp8 quantization_config), two shards and an index.
void WriteSmallCheckpoint(const std::string& dir);

// Replaces the header of a safetensors file with `header_text` verbatim,
// keeping its data section.
void ReplaceHeaderText(const std::string& path, const std::string& header_text);
// Parses the header, lets `edit` change it, writes it back (keeping data).
void EditHeader(const std::string& path, const std::function<void(nlohmann::json&)>& edit);
// Overwrites the 8-byte little-endian header length.
void SetHeaderLength(const std::string& path, uint64_t length);

}  // namespace moeserve::testing

#endif  // MOESERVE_TESTS_RUNTIME_CHECKPOINT_CHECKPOINT_TEST_UTIL_H_
