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

absl::StatusOr<Checkpoint::Located> Checkpoint::Locate(std::string_view name_view,
                                                       std::span<const int64_t> expected_shape) {
  const std::string name(name_view);
  auto shard = ShardFor(name);
  if (!shard.ok()) return shard.status();
  Located w;
  w.file = *shard;
  w.info = w.file->Find(name);
  const TensorInfo& info = *w.info;
  const std::string where = absl::StrCat(w.file->path(), ": tensor ", name, ": ");
  w.layout.dtype = info.dtype;
  w.layout.shape = info.shape;
  switch (info.dtype) {
    case DType::kF32:
    case DType::kBF16:
    case DType::kF8E4M3:
      if (!std::equal(info.shape.begin(), info.shape.end(), expected_shape.begin(),
                      expected_shape.end())) {
        return absl::InvalidArgumentError(absl::StrCat(where, "shape ", ShapeString(info.shape),
                                                       " but the config implies ",
                                                       ShapeString(expected_shape)));
      }
      if (info.dtype != DType::kF8E4M3) return w;
      if (info.shape.size() != 2) {
        return absl::InvalidArgumentError(absl::StrCat(where, "F8_E4M3 weight has shape ",
                                                       ShapeString(info.shape),
                                                       "; block-scaled FP8 weights must be 2-D"));
      }
      w.layout.block = fp8_block_;
      break;
    case DType::kI8: {
      // Two FP4 codes a byte along the row: [rows, cols] is stored [rows, cols / 2].
      const bool matrix = expected_shape.size() == 2 && expected_shape[1] % 2 == 0;
      if (!matrix || info.shape.size() != 2 || info.shape[0] != expected_shape[0] ||
          info.shape[1] * 2 != expected_shape[1]) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, "I8 shape ", ShapeString(info.shape),
            " (two FP4 e2m1 codes per byte) does not hold the config's ",
            ShapeString(expected_shape),
            matrix ? absl::StrCat("; expected I8 [", expected_shape[0], ",", expected_shape[1] / 2,
                                  "]")
                   : std::string("; FP4 weights are matrices with an even number of columns")));
      }
      w.layout.dtype = DType::kF4E2M1x2;
      w.layout.block = kFp4ScaleBlock;
      break;
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          where, "dtype ", std::string(DTypeName(info.dtype)), " is not supported for a weight"));
  }
  if (absl::Status s = LocateScale(name, &w); !s.ok()) return s;
  return w;
}

// The scale tensor of a quantized weight: its name in either convention,
// dtype and the shape its block layout implies.
absl::Status Checkpoint::LocateScale(const std::string& name, Located* w) {
  const std::string where = absl::StrCat(w->file->path(), ": tensor ", name, ": ");
  const std::string dtype_name(DTypeName(w->info->dtype));
  const std::string v3_name = absl::StrCat(name, kScaleSuffix);
  const std::string v4_name =
      name.ends_with(".weight")
          ? absl::StrCat(name.substr(0, name.size() - std::string_view(".weight").size()), ".scale")
          : std::string();
  const bool has_v3 = Has(v3_name);
  const bool has_v4 = !v4_name.empty() && Has(v4_name);
  if (has_v3 && has_v4) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, dtype_name, " weight has two scale tensors, ", v3_name, " and ",
                     v4_name, "; a checkpoint names its scales one way"));
  }
  if (!has_v3 && !has_v4) {
    return absl::NotFoundError(absl::StrCat(
        where, dtype_name, " weight has no scale tensor ", v3_name,
        v4_name.empty() ? std::string() : absl::StrCat(" or ", v4_name), " in the checkpoint"));
  }
  const std::string& scale_name = has_v4 ? v4_name : v3_name;
  auto scale_shard = ShardFor(scale_name);
  if (!scale_shard.ok()) return scale_shard.status();
  w->scale_file = *scale_shard;
  w->scale_info = w->scale_file->Find(scale_name);
  const TensorInfo& scale = *w->scale_info;
  const int64_t rows = w->info->shape[0];
  const int64_t block = w->layout.block;
  const bool fp4 = w->layout.dtype == DType::kF4E2M1x2;
  const int64_t cols = fp4 ? 2 * w->info->shape[1] : w->info->shape[1];
  const std::vector<int64_t> scale_shape = {fp4 ? rows : CeilDiv(rows, block),
                                            CeilDiv(cols, block)};
  // DeepSeek-V3's "_scale_inv" are F32; V4's ".scale" are E8M0 or, in some
  // checkpoints, F32.
  const bool dtype_ok = scale.dtype == DType::kF32 || (has_v4 && scale.dtype == DType::kF8E8M0);
  if (!dtype_ok || scale.shape != scale_shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        w->scale_file->path(), ": tensor ", scale_name, ": scale is ",
        std::string(DTypeName(scale.dtype)), " ", ShapeString(scale.shape), " but the ",
        fp4 ? "FP4 (I8)" : dtype_name, " weight ", name, " ", ShapeString(w->info->shape),
        " needs ", has_v4 ? "F8_E8M0 or F32 " : "F32 ", ShapeString(scale_shape),
        fp4 ? absl::StrCat(" (one scale per ", block, " inputs of ", cols, ")")
            : absl::StrCat(" (", block, "x", block, " blocks)")));
  }
  w->layout.scale_name = scale_name;
  w->layout.scale_dtype = scale.dtype;
  return absl::OkStatus();
}

absl::StatusOr<WeightLayout> Checkpoint::CheckWeight(std::string_view name,
                                                     std::span<const int64_t> expected_shape) {
  auto w = Locate(name, expected_shape);
  if (!w.ok()) return w.status();
  return std::move(w->layout);
}

absl::StatusOr<CheckpointWeight> Checkpoint::ReadRaw(std::string_view name,
                                                     std::span<const int64_t> expected_shape) {
  auto located = Locate(name, expected_shape);
  if (!located.ok()) return located.status();
  CheckpointWeight w;
  w.name = std::string(name);
  w.dtype = located->layout.dtype;
  w.shape = located->layout.shape;
  w.data = located->file->Data(*located->info);
  ++stats_.tensors_read;
  stats_.bytes_read += static_cast<int64_t>(w.data.size());
  if (located->scale_info == nullptr) return w;

  // The data section need not be 4-byte aligned: copy the scales out.
  const TensorInfo& scale = *located->scale_info;
  const std::span<const std::byte> bytes = located->scale_file->Data(scale);
  if (scale.dtype == DType::kF32) {
    w.scale_inv.resize(bytes.size() / sizeof(float));
    if (!bytes.empty()) std::memcpy(w.scale_inv.data(), bytes.data(), bytes.size());
  } else {  // kF8E8M0: powers of two, exact in float32
    w.scale_inv.resize(bytes.size());
    for (size_t i = 0; i < bytes.size(); ++i) {
      const auto code = static_cast<uint8_t>(bytes[i]);
      if (code == 0xff) {
        const int64_t cols = scale.shape[1];
        return absl::DataLossError(absl::StrCat(
            located->scale_file->path(), ": tensor ", scale.name, ": entry [",
            static_cast<int64_t>(i) / cols, ",", static_cast<int64_t>(i) % cols,
            "] is 0xff, NaN in F8_E8M0; the weight ", w.name, " cannot be dequantized"));
      }
      w.scale_inv[i] = F8E8M0ToF32(code);
    }
  }
  w.block = located->layout.block;
  ++stats_.tensors_read;
  stats_.bytes_read += static_cast<int64_t>(bytes.size());
  return w;
}

absl::StatusOr<Tensor> Checkpoint::ReadF32(std::string_view name,
                                           std::span<const int64_t> expected_shape) {
  auto w = ReadRaw(name, expected_shape);
  if (!w.ok()) return w.status();
  return HostWeightToF32(w->host());
}

absl::StatusOr<Tensor> Checkpoint::ReadIds(std::string_view name_view,
                                           std::span<const int64_t> expected_shape, int64_t num_ids,
                                           std::string_view range_name) {
  const std::string name(name_view);
  auto shard = ShardFor(name);
  if (!shard.ok()) return shard.status();
  const SafetensorsFile& file = **shard;
  const TensorInfo& info = *file.Find(name);
  const std::string where = absl::StrCat(file.path(), ": tensor ", name, ": ");
  if (info.dtype != DType::kI64 && info.dtype != DType::kI32) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, "dtype ", std::string(DTypeName(info.dtype)), "; a table of ids is I64 or I32"));
  }
  if (!std::equal(info.shape.begin(), info.shape.end(), expected_shape.begin(),
                  expected_shape.end())) {
    return absl::InvalidArgumentError(absl::StrCat(where, "shape ", ShapeString(info.shape),
                                                   " but the config implies ",
                                                   ShapeString(expected_shape)));
  }
  const std::span<const std::byte> bytes = file.Data(info);
  Tensor out = Tensor::Empty(DType::kI32, info.shape);
  auto* ids = static_cast<int32_t*>(out.raw());
  const int64_t cols = info.shape.empty() ? 1 : info.shape.back();
  const size_t size = DTypeSize(info.dtype);
  for (int64_t i = 0; i < out.numel(); ++i) {
    int64_t v = 0;
    if (info.dtype == DType::kI64) {
      std::memcpy(&v, bytes.data() + static_cast<size_t>(i) * size, sizeof(int64_t));
    } else {
      int32_t v32 = 0;
      std::memcpy(&v32, bytes.data() + static_cast<size_t>(i) * size, sizeof(int32_t));
      v = v32;
    }
    if (v < 0 || v >= num_ids) {
      return absl::InvalidArgumentError(absl::StrCat(where, "value ", v, " at [", i / cols, ",",
                                                     i % cols, "] is outside [0, ", num_ids,
                                                     "), the range of ", std::string(range_name)));
    }
    ids[i] = static_cast<int32_t>(v);
  }
  ++stats_.tensors_read;
  stats_.bytes_read += static_cast<int64_t>(bytes.size());
  return out;
}

}  // namespace moeserve
