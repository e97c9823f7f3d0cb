#include "runtime/checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "runtime/checkpoint/bounded_json.h"

namespace moeserve {
namespace {

using nlohmann::json;

constexpr uint64_t kMinHeaderBytes = 8;
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;  // as the reference implementation

// Safetensors dtype names of the dtypes moeserve reads.
bool ParseDType(std::string_view name, DType* dtype) {
  if (name == "BF16") {
    *dtype = DType::kBF16;
  } else if (name == "F32") {
    *dtype = DType::kF32;
  } else if (name == "F8_E4M3") {
    *dtype = DType::kF8E4M3;
  } else if (name == "F8_E8M0") {  // DeepSeek-V4's power-of-two scales
    *dtype = DType::kF8E8M0;
  } else if (name == "I8") {  // DeepSeek-V4's FP4 experts, two codes a byte
    *dtype = DType::kI8;
  } else if (name == "I64") {  // DeepSeek-V4's hash-routing tables
    *dtype = DType::kI64;
  } else {
    return false;
  }
  return true;
}

std::string_view SafetensorsDTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kBF16:
      return "BF16";
    case DType::kF8E4M3:
      return "F8_E4M3";
    case DType::kI32:
      return "I32";
    case DType::kF8E8M0:
      return "F8_E8M0";
    case DType::kI8:
    case DType::kF4E2M1x2:  // safetensors has no FP4 dtype: packed bytes, as DeepSeek writes them
      return "I8";
    case DType::kI64:
      return "I64";
  }
  return "?";
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

std::string Errno(int err) { return std::strerror(err); }

// A JSON integer >= 0 that fits int64_t; false for anything else (floats,
// negatives, strings).
bool NonNegativeInt(const json& v, int64_t* out) {
  if (!v.is_number_integer()) return false;
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(u);
    return true;
  }
  const auto s = v.get<int64_t>();
  if (s < 0) return false;
  *out = s;
  return true;
}

// Parses one header entry into `info` (name already set). `prefix` is
// "<path>: tensor <name>: " for messages.
absl::Status ParseEntry(const json& entry, const std::string& prefix, TensorInfo* info) {
  if (!entry.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "header entry is ", entry.type_name(), ", expected an object"));
  }
  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "\"dtype\" is missing or not a string"));
  }
  const auto& dtype_name = dtype_it->get_ref<const std::string&>();
  if (!ParseDType(dtype_name, &info->dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "unsupported dtype \"", dtype_name,
                     "\"; moeserve reads BF16, F32, F8_E4M3, F8_E8M0, I8 and I64"));
  }
  auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "\"shape\" is missing or not an array"));
  }
  for (const json& d : *shape_it) {
    int64_t dim = 0;
    if (!NonNegativeInt(d, &dim)) {
      return absl::InvalidArgumentError(absl::StrCat(prefix, "shape ", shape_it->dump(),
                                                     " has a dimension ", d.dump(),
                                                     " that is not a non-negative integer"));
    }
    info->shape.push_back(dim);
  }
  auto off_it = entry.find("data_offsets");
  int64_t begin = 0;
  int64_t end = 0;
  if (off_it == entry.end() || !off_it->is_array() || off_it->size() != 2 ||
      !NonNegativeInt((*off_it)[0], &begin) || !NonNegativeInt((*off_it)[1], &end)) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "\"data_offsets\" is ",
                     off_it == entry.end() ? std::string("missing") : off_it->dump(),
                     "; expected [begin, end] of non-negative integers"));
  }
  if (begin > end) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "data_offsets [", begin, ",", end, ") begin after end"));
  }
  info->begin = static_cast<uint64_t>(begin);
  info->end = static_cast<uint64_t>(end);

  // numel * element size, refusing to wrap around.
  uint64_t nbytes = DTypeSize(info->dtype);
  for (int64_t dim : info->shape) {
    if (__builtin_mul_overflow(nbytes, static_cast<uint64_t>(dim), &nbytes)) {
      return absl::InvalidArgumentError(absl::StrCat(prefix, "shape ", ShapeString(info->shape),
                                                     " overflows a 64-bit byte count"));
    }
  }
  if (nbytes != info->end - info->begin) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "shape ", ShapeString(info->shape), " of ", dtype_name, " is ", nbytes,
                     " bytes but data_offsets [", info->begin, ",", info->end, ") span ",
                     info->end - info->begin, " bytes"));
  }
  return absl::OkStatus();
}

absl::Status ParseMetadata(const json& meta, const std::string& path,
                           std::map<std::string, std::string>* out) {
  if (meta.is_null()) return absl::OkStatus();
  if (!meta.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": \"__metadata__\" is ", meta.type_name(), ", expected an object"));
  }
  for (const auto& [key, value] : meta.items()) {
    if (!value.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": \"__metadata__\" value of \"", key,
                                                     "\" is ", value.dump(),
                                                     ", expected a string"));
    }
    (*out)[key] = value.get<std::string>();
  }
  return absl::OkStatus();
}

// Validates every entry of a parsed header against a data section of
// `data_size` bytes; returns the tensors sorted by offset.
absl::Status ParseHeader(const json& header, const std::string& path, uint64_t data_size,
                         std::vector<TensorInfo>* out,
                         std::map<std::string, std::string>* metadata) {
  std::vector<TensorInfo> tensors;
  tensors.reserve(header.size());
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (absl::Status s = ParseMetadata(entry, path, metadata); !s.ok()) return s;
      continue;
    }
    TensorInfo info;
    info.name = name;
    const std::string prefix = absl::StrCat(path, ": tensor ", name, ": ");
    if (absl::Status s = ParseEntry(entry, prefix, &info); !s.ok()) return s;
    if (info.end > data_size) {
      return absl::DataLossError(absl::StrCat(prefix, "data_offsets [", info.begin, ",", info.end,
                                              ") extend past the end of the data section (",
                                              data_size, " bytes)"));
    }
    tensors.push_back(std::move(info));
  }

  std::stable_sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // Empty tensors occupy no bytes and cannot overlap anything.
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : tensors) {
    if (t.begin == t.end) continue;
    if (previous != nullptr && t.begin < previous->end) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensors ", previous->name, " [", previous->begin, ",", previous->end, ") and ",
          t.name, " [", t.begin, ",", t.end, ") overlap in the data section"));
    }
    previous = &t;
  }

  *out = std::move(tensors);
  return absl::OkStatus();
}

// Writes all of `bytes` to `fd`, retrying short writes.
absl::Status WriteAll(int fd, const void* bytes, size_t n, const std::string& path) {
  const auto* p = static_cast<const char*>(bytes);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat(path, ": write failed: ", Errno(errno)));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string msg = absl::StrCat(path, ": cannot open: ", Errno(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::PermissionDeniedError(msg);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const auto file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    return absl::DataLossError(absl::StrCat(path, ": file is ", file_size,
                                            " bytes, shorter than the 8-byte header length"));
  }
  void* map = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (map == MAP_FAILED) {
    return absl::InternalError(absl::StrCat(path, ": mmap failed: ", Errno(map_err)));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_ = static_cast<const std::byte*>(map);
  file->map_size_ = file_size;

  // Little-endian u64, independent of the host's byte order.
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) {
    header_bytes = (header_bytes << 8) | static_cast<uint8_t>(file->map_[i]);
  }
  if (header_bytes < kMinHeaderBytes || header_bytes > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_bytes,
                                                   " is outside [", kMinHeaderBytes, ", ",
                                                   kMaxHeaderBytes, "]"));
  }
  if (header_bytes > file_size - 8) {
    return absl::DataLossError(absl::StrCat(path, ": header length ", header_bytes,
                                            " extends past the end of the file (", file_size,
                                            " bytes); the file is truncated or not safetensors"));
  }
  file->data_offset_ = 8 + header_bytes;
  const uint64_t data_size = file_size - file->data_offset_;

  const auto* header_begin = reinterpret_cast<const char*>(file->map_ + 8);
  auto parsed = ParseBoundedJson(std::string_view(header_begin, header_bytes));
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header: ", parsed.status().message()));
  }
  const json header = *std::move(parsed);
  if (!header.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": header is JSON ", header.type_name(), ", expected an object"));
  }

  std::vector<TensorInfo> tensors;
  if (absl::Status st = ParseHeader(header, path, data_size, &tensors, &file->metadata_);
      !st.ok()) {
    return st;
  }
  file->tensors_ = std::move(tensors);
  for (size_t i = 0; i < file->tensors_.size(); ++i) file->index_[file->tensors_[i].name] = i;
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(const_cast<std::byte*>(map_), map_size_);
}

const TensorInfo* SafetensorsFile::Find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

std::span<const std::byte> SafetensorsFile::Data(const TensorInfo& info) const {
  return {map_ + data_offset_ + info.begin, static_cast<size_t>(info.end - info.begin)};
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  // The reference writer puts __metadata__ first, then the tensors; we keep
  // the caller's order so the data section follows it.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string_view> seen;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__" || !seen.insert(name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor name \"", name, "\" is reserved or repeated"));
    }
    const uint64_t nbytes = tensor.nbytes();
    if (nbytes > 0 && tensor.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", name, " has shape ",
                                                     tensor.ShapeString(), " but no storage"));
    }
    header[name] = {{"dtype", std::string(SafetensorsDTypeName(tensor.dtype()))},
                    {"shape", tensor.shape()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::ordered_json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot encode header: ", e.what()));
  }
  // Pad with spaces so the data section starts 8-byte aligned, as the
  // reference writer does.
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(text.size() >> (8 * i));

  // Write beside the target and rename, so a reader never sees half a file.
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat(tmp, ": cannot create: ", Errno(errno)));
  absl::Status s = WriteAll(fd, length, sizeof(length), tmp);
  if (s.ok()) s = WriteAll(fd, text.data(), text.size(), tmp);
  for (const auto& [name, tensor] : tensors) {
    if (!s.ok()) break;
    if (tensor.nbytes() > 0) s = WriteAll(fd, tensor.raw(), tensor.nbytes(), tmp);
  }
  if (::close(fd) != 0 && s.ok()) {
    s = absl::InternalError(absl::StrCat(tmp, ": close failed: ", Errno(errno)));
  }
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    s = absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ", Errno(errno)));
  }
  if (!s.ok()) ::unlink(tmp.c_str());
  return s;
}

}  // namespace moeserve
