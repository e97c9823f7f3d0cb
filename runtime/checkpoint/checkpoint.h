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

// A weight as the checkpoint stores it (Checkpoint::ReadRaw), validated.
// `data` points into the memory-mapped shard: valid while the Checkpoint
// that read it lives.
struct CheckpointWeight {
  std::string name;
  DType dtype = DType::kF32;  // kF32, kBF16 or kF8E4M3
  std::vector<int64_t> shape;
  std::span<const std::byte> data;
  // kF8E4M3: "<name>_scale_inv", copied out of the shard (aligned), and the
  // block size it is in. Empty and 0 otherwise.
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

  // A weight in its checkpoint dtype, checked against `expected_shape`:
  // F32, BF16, or F8_E4M3 with its sibling "<name>_scale_inv" (F32,
  // [ceil(rows/128), ceil(cols/128)] blocks; the block size comes from
  // config.json's quantization_config.weight_block_size when present).
  // Errors name the tensor and the file: missing tensor, shape mismatch
  // ("FILE: tensor X: shape [a,b] but the config implies [c,d]"), missing
  // or misshapen scales, unsupported dtype for a weight.
  absl::StatusOr<CheckpointWeight> ReadRaw(std::string_view name,
                                           std::span<const int64_t> expected_shape);

  // ReadRaw's weight in float32 (HostWeightToF32): F32 copied, BF16
  // widened, F8_E4M3 dequantized with its block scales. Same errors.
  absl::StatusOr<Tensor> ReadF32(std::string_view name, std::span<const int64_t> expected_shape);

  const CheckpointStats& stats() const { return stats_; }

 private:
  Checkpoint() = default;
  absl::StatusOr<SafetensorsFile*> ShardFor(std::string_view name);

  std::string dir_;
  nlohmann::json config_;
  int64_t fp8_block_ = 128;
  std::map<std::string, std::string, std::less<>> weight_map_;  // tensor -> shard file name
  std::map<std::string, std::unique_ptr<SafetensorsFile>, std::less<>> shards_;  // opened
  CheckpointStats stats_;
};

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_CHECKPOINT_CHECKPOINT_H_
