// A Hugging Face checkpoint directory as published: config.json plus either
// model.safetensors.index.json and its shards, or a single model.safetensors.
#ifndef MOESERVE_RUNTIME_CHECKPOINT_CHECKPOINT_H_
#define MOESERVE_RUNTIME_CHECKPOINT_CHECKPOINT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/host_weight.h"
#include "kernels/tensor.h"
#include "nlohmann/json.hpp"
#include "runtime/checkpoint/safetensors.h"

namespace moeserve {

// What has been touched so far; lets tests prove that a rank reads only the
// tensors it needs.
struct CheckpointStats {
  int64_t shards_opened = 0;
  int64_t tensors_read = 0;
  int64_t bytes_read = 0;
};

// DeepSeek-V4 scales its FP4 experts per this many inputs of a row.
inline constexpr int64_t kFp4ScaleBlock = 32;

// How a weight is stored, as the shard headers say (Checkpoint::CheckWeight):
// learnt and validated without reading any of its data.
struct WeightLayout {
  // The weight's: kF32, kBF16, kF8E4M3, or kF4E2M1x2 for an I8 tensor (the
  // only I8 weights published are DeepSeek-V4's FP4 experts).
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // as stored: [rows, cols / 2] for kF4E2M1x2
  // Quantized weights: the scale tensor ("<name>_scale_inv" as DeepSeek-V3
  // names it, "<stem>.scale" for a "<stem>.weight" as V4 does), its dtype
  // (kF32 or kF8E8M0) and block: FP8 square blocks of `block` x `block`,
  // FP4 one scale per `block` inputs of a row. Empty, kF32 and 0 otherwise.
  std::string scale_name;
  DType scale_dtype = DType::kF32;
  int64_t block = 0;
};

// A weight as the checkpoint stores it (Checkpoint::ReadRaw), validated.
// `data` points into the memory-mapped shard: valid while the Checkpoint
// that read it lives.
struct CheckpointWeight {
  std::string name;
  DType dtype = DType::kF32;   // kF32, kBF16, kF8E4M3 or kF4E2M1x2
  std::vector<int64_t> shape;  // as stored (WeightLayout::shape)
  std::span<const std::byte> data;
  // Quantized weights: the scales as float32, copied out of the shard
  // (aligned; E8M0 decoded, exactly), and the block they are in
  // (WeightLayout). Empty and 0 otherwise.
  std::vector<float> scale_inv;
  int64_t block = 0;

  // A view for Backend::LoadWeight; valid while this object lives.
  HostWeight host() const {
    return {name, dtype, shape, data.data(), scale_inv.empty() ? nullptr : scale_inv.data(), block};
  }
};

// Opening reads config.json and the index only (and checks that every shard
// the index names exists). A shard is memory-mapped and its header validated
// the first time one of its tensors is read, so a rank that needs a few
// layers or experts never touches the other shards. A single-file checkpoint
// has no index: its model.safetensors is opened at Open to learn the names.
// Not thread-safe.
class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const nlohmann::json& config_json() const { return config_; }
  // Tensor names the index lists (or the single file holds), sorted.
  std::vector<std::string> TensorNames() const;
  bool Has(std::string_view name) const;

  // Header of a tensor (opens its shard). NotFound names the tensor.
  absl::StatusOr<TensorInfo> Info(std::string_view name);

  // Checks a weight against `expected_shape`, the shape the config implies
  // ([rows, cols] of the matrix also for FP4), from the headers only:
  //  - F32 or BF16 of that shape;
  //  - F8_E4M3 [rows, cols] with a scale tensor (see WeightLayout for its
  //    names: "_scale_inv" are F32, ".scale" F8_E8M0 or F32) of
  //    [ceil(rows/B), ceil(cols/B)], B from config.json's
  //    quantization_config.weight_block_size (default 128);
  //  - I8 [rows, cols/2], two FP4 e2m1 codes per byte, with a ".scale" of
  //    F8_E8M0 or F32 [rows, ceil(cols/32)].
  // Errors name the tensor and the file: missing tensor, shape mismatch
  // ("FILE: tensor X: shape [a,b] but the config implies [c,d]"), missing,
  // ambiguous or misshapen scales, a dtype that is not a weight's.
  absl::StatusOr<WeightLayout> CheckWeight(std::string_view name,
                                           std::span<const int64_t> expected_shape);

  // CheckWeight's weight with its data and decoded scales. Also an E8M0
  // scale of 0xff (NaN) is an error naming the scale tensor and the entry.
  absl::StatusOr<CheckpointWeight> ReadRaw(std::string_view name,
                                           std::span<const int64_t> expected_shape);

  // ReadRaw's weight in float32 (HostWeightToF32) of `expected_shape`: F32
  // copied, BF16 widened, F8_E4M3 and FP4 dequantized with their block
  // scales. Same errors.
  absl::StatusOr<Tensor> ReadF32(std::string_view name, std::span<const int64_t> expected_shape);

  // A table of ids (I64 or I32, as DeepSeek-V4's hash-routing
  // "ffn.gate.tid2eid") of `expected_shape`, every entry checked to lie in
  // [0, num_ids); returned as I32. A value outside is an error naming the
  // tensor, the entry, the value and `range_name` (what num_ids counts).
  absl::StatusOr<Tensor> ReadIds(std::string_view name, std::span<const int64_t> expected_shape,
                                 int64_t num_ids, std::string_view range_name);

  const CheckpointStats& stats() const { return stats_; }

 private:
  Checkpoint() = default;
  absl::StatusOr<SafetensorsFile*> ShardFor(std::string_view name);
  // CheckWeight's work, keeping where the weight and its scales are.
  struct Located {
    WeightLayout layout;
    const SafetensorsFile* file = nullptr;
    const TensorInfo* info = nullptr;
    const SafetensorsFile* scale_file = nullptr;  // null without scales
    const TensorInfo* scale_info = nullptr;
  };
  absl::StatusOr<Located> Locate(std::string_view name, std::span<const int64_t> expected_shape);
  absl::Status LocateScale(const std::string& name, Located* w);

  std::string dir_;
  nlohmann::json config_;
  int64_t fp8_block_ = 128;
  std::map<std::string, std::string, std::less<>> weight_map_;  // tensor -> shard file name
  std::map<std::string, std::unique_ptr<SafetensorsFile>, std::less<>> shards_;  // opened
  CheckpointStats stats_;
};

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_CHECKPOINT_CHECKPOINT_H_
