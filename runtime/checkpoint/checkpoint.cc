#include "runtime/checkpoint/checkpoint.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/ops.h"
#include "runtime/checkpoint/bounded_json.h"

namespace moeserve {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr char kConfigFile[] = "config.json";
constexpr char kIndexFile[] = "model.safetensors.index.json";
constexpr char kSingleFile[] = "model.safetensors";
constexpr char kScaleSuffix[] = "_scale_inv";

std::string ShapeString(std::span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

bool Exists(const fs::path& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

// Reads and parses a JSON file; errors name the file and, for syntax
// errors, nlohmann's line and column.
absl::StatusOr<json> ReadJsonFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot open"));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path.string(), ": read failed"));
  auto parsed = ParseBoundedJson(text.str());
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", parsed.status().message()));
  }
  return parsed;
}

// quantization_config.weight_block_size, when present: two equal positive
// integers (moeserve's FP8 path uses square blocks, as every published
// block-quantized checkpoint does).
absl::Status ReadBlockSize(const json& config, const fs::path& path, int64_t* block) {
  auto q = config.find("quantization_config");
  if (q == config.end() || q->is_null()) return absl::OkStatus();
  if (!q->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": quantization_config is ",
                                                   q->dump(), ", expected an object"));
  }
  auto b = q->find("weight_block_size");
  if (b == q->end()) return absl::OkStatus();
  const bool valid = b->is_array() && b->size() == 2 && (*b)[0].is_number_integer() &&
                     (*b)[0] == (*b)[1] && (*b)[0].get<int64_t>() > 0;
  if (!valid) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": quantization_config.weight_block_size is ", b->dump(),
                     "; expected two equal positive integers such as [128, 128]"));
  }
  *block = (*b)[0].get<int64_t>();
  return absl::OkStatus();
}

// A shard name from the index must stay inside the checkpoint directory.
bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos && name.find("..") == std::string::npos &&
         name.find('\0') == std::string::npos;
}

absl::Status ParseIndex(const json& index, const fs::path& path,
                        std::map<std::string, std::string, std::less<>>* weight_map) {
  if (!index.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": expected a JSON object, got ", index.type_name()));
  }
  auto wm = index.find("weight_map");
  if (wm == index.end() || !wm->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": \"weight_map\" is missing or not an object"));
  }
  for (const auto& [tensor, file] : wm->items()) {
    if (!file.is_string() || !IsPlainFileName(file.get<std::string>())) {
      return absl::InvalidArgumentError(
          absl::StrCat(path.string(), ": tensor ", tensor, " maps to ", file.dump(),
                       "; expected the plain file name of a shard in the same directory"));
    }
    weight_map->emplace(tensor, file.get<std::string>());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  ckpt->dir_ = dir;
  const fs::path root(dir);

  const fs::path config_path = root / kConfigFile;
  if (!Exists(config_path)) {
    return absl::NotFoundError(absl::StrCat(
        config_path.string(), " does not exist; a checkpoint directory holds config.json"));
  }
  auto config = ReadJsonFile(config_path);
  if (!config.ok()) return config.status();
  if (!config->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path.string(), ": expected a JSON object, got ", config->type_name()));
  }
  ckpt->config_ = *std::move(config);
  if (absl::Status s = ReadBlockSize(ckpt->config_, config_path, &ckpt->fp8_block_); !s.ok()) {
    return s;
  }

  const fs::path index_path = root / kIndexFile;
  const fs::path single_path = root / kSingleFile;
  if (Exists(index_path)) {
    auto index = ReadJsonFile(index_path);
    if (!index.ok()) return index.status();
    if (absl::Status s = ParseIndex(*index, index_path, &ckpt->weight_map_); !s.ok()) return s;
    // Shards are opened lazily, but a missing one is reported now.
    std::map<std::string, std::string> first_tensor;  // shard -> a tensor it should hold
    for (const auto& [tensor, file] : ckpt->weight_map_) first_tensor.emplace(file, tensor);
    for (const auto& [file, tensor] : first_tensor) {
      if (!Exists(root / file)) {
        return absl::NotFoundError(absl::StrCat(index_path.string(), ": shard ", file,
                                                " (holding tensor ", tensor, ") does not exist in ",
                                                dir));
      }
    }
  } else if (Exists(single_path)) {
    auto file = SafetensorsFile::Open(single_path.string());
    if (!file.ok()) return file.status();
    for (const TensorInfo& t : (*file)->tensors()) ckpt->weight_map_.emplace(t.name, kSingleFile);
    ckpt->shards_.emplace(kSingleFile, *std::move(file));
    ckpt->stats_.shards_opened = 1;
  } else {
    return absl::NotFoundError(absl::StrCat(dir, ": neither ", kIndexFile, " nor ", kSingleFile,
                                            " exists; expected one of them beside config.json"));
  }
  return ckpt;
}

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(weight_map_.size());
  for (const auto& [name, file] : weight_map_) names.push_back(name);
  return names;
}

bool Checkpoint::Has(std::string_view name) const { return weight_map_.contains(name); }

absl::StatusOr<SafetensorsFile*> Checkpoint::ShardFor(std::string_view name_view) {
  const std::string name(name_view);  // this Abseil's StrCat takes no std::string_view
  auto it = weight_map_.find(name);
  if (it == weight_map_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "tensor ", name, " is not in the checkpoint ", dir_,
        shards_.contains(kSingleFile) ? absl::StrCat(" (", kSingleFile, ")")
                                      : absl::StrCat(" (not listed in ", kIndexFile, ")")));
  }
  auto shard = shards_.find(it->second);
  if (shard == shards_.end()) {
    auto file = SafetensorsFile::Open((fs::path(dir_) / it->second).string());
    if (!file.ok()) return file.status();
    ++stats_.shards_opened;
    shard = shards_.emplace(it->second, *std::move(file)).first;
  }
  SafetensorsFile* f = shard->second.get();
  if (f->Find(name) == nullptr) {
    return absl::NotFoundError(absl::StrCat(f->path(), ": tensor ", name, " is listed in ",
                                            kIndexFile,
                                            " for this shard but the shard has no "
                                            "such tensor"));
  }
  return f;
}

absl::StatusOr<TensorInfo> Checkpoint::Info(std::string_view name) {
  auto shard = ShardFor(name);
  if (!shard.ok()) return shard.status();
  return *(*shard)->Find(name);
}

absl::StatusOr<CheckpointWeight> Checkpoint::ReadRaw(std::string_view name_view,
                                                     std::span<const int64_t> expected_shape) {
  const std::string name(name_view);
  auto shard = ShardFor(name);
  if (!shard.ok()) return shard.status();
  const SafetensorsFile& file = **shard;
  const TensorInfo& info = *file.Find(name);
  const std::string where = absl::StrCat(file.path(), ": tensor ", name, ": ");
  if (!std::equal(info.shape.begin(), info.shape.end(), expected_shape.begin(),
                  expected_shape.end())) {
    return absl::InvalidArgumentError(absl::StrCat(where, "shape ", ShapeString(info.shape),
                                                   " but the config implies ",
                                                   ShapeString(expected_shape)));
  }
  CheckpointWeight w;
  w.name = name;
  w.dtype = info.dtype;
  w.shape = info.shape;
  w.data = file.Data(info);

  if (info.dtype == DType::kF32 || info.dtype == DType::kBF16) {
    ++stats_.tensors_read;
    stats_.bytes_read += static_cast<int64_t>(w.data.size());
    return w;
  }
  if (info.dtype != DType::kF8E4M3) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, "dtype ", std::string(DTypeName(info.dtype)), " is not supported for a weight"));
  }

  if (info.shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(where, "F8_E4M3 weight has shape ",
                                                   ShapeString(info.shape),
                                                   "; block-scaled FP8 weights must be 2-D"));
  }
  const std::string scale_name = absl::StrCat(name, kScaleSuffix);
  if (!Has(scale_name)) {
    return absl::NotFoundError(absl::StrCat(where, "F8_E4M3 weight has no scale tensor ",
                                            scale_name, " in the checkpoint"));
  }
  auto scale_shard = ShardFor(scale_name);
  if (!scale_shard.ok()) return scale_shard.status();
  const TensorInfo& scale = *(*scale_shard)->Find(scale_name);
  const int64_t rows = info.shape[0];
  const int64_t cols = info.shape[1];
  const std::vector<int64_t> scale_shape = {CeilDiv(rows, fp8_block_), CeilDiv(cols, fp8_block_)};
  if (scale.dtype != DType::kF32 || scale.shape != scale_shape) {
    return absl::InvalidArgumentError(
        absl::StrCat((*scale_shard)->path(), ": tensor ", scale_name, ": scale is ",
                     std::string(DTypeName(scale.dtype)), " ", ShapeString(scale.shape),
                     " but the F8_E4M3 weight ", name, " ", ShapeString(info.shape), " needs F32 ",
                     ShapeString(scale_shape), " (", fp8_block_, "x", fp8_block_, " blocks)"));
  }
  // The data section need not be 4-byte aligned: copy the scales out.
  const std::span<const std::byte> scale_bytes = (*scale_shard)->Data(scale);
  w.scale_inv.resize(scale_bytes.size() / sizeof(float));
  if (!scale_bytes.empty()) std::memcpy(w.scale_inv.data(), scale_bytes.data(), scale_bytes.size());
  w.block = fp8_block_;
  stats_.tensors_read += 2;
  stats_.bytes_read += static_cast<int64_t>(w.data.size() + scale_bytes.size());
  return w;
}

absl::StatusOr<Tensor> Checkpoint::ReadF32(std::string_view name,
                                           std::span<const int64_t> expected_shape) {
  auto w = ReadRaw(name, expected_shape);
  if (!w.ok()) return w.status();
  return HostWeightToF32(w->host());
}

}  // namespace moeserve
