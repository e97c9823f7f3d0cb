// Reading and writing single safetensors files.
//
// Format: an 8-byte little-endian header length N, N bytes of JSON mapping
// tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
// relative to the data section that follows the header) plus an optional
// "__metadata__" object of strings, then the data section.
#ifndef MOESERVE_RUNTIME_CHECKPOINT_SAFETENSORS_H_
#define MOESERVE_RUNTIME_CHECKPOINT_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"

namespace moeserve {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;
};

// A memory-mapped, validated safetensors file. Open() checks the whole header
// before anything is returned: sane header length (8 <= N <= 100 MiB and
// inside the file), valid JSON nested at most kMaxJsonDepth levels, known dtypes (BF16, F32,
// F8_E4M3, F8_E8M0, I8, I64), shape x element size == end - begin, every range inside the
// file, ranges non-overlapping (unreferenced gaps are tolerated). Any violation is an
// InvalidArgument/DataLoss error whose message names the file (and the
// tensor, where there is one); a missing file is NotFound.
// Thread-safe for concurrent readers once opened.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr when the file has no tensor of that name.
  const TensorInfo* Find(std::string_view name) const;
  // The tensor's bytes inside the mapping; valid while this object lives.
  std::span<const std::byte> Data(const TensorInfo& info) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;

  std::string path_;
  const std::byte* map_ = nullptr;  // whole file, PROT_READ
  size_t map_size_ = 0;
  size_t data_offset_ = 0;                            // 8 + header length
  std::vector<TensorInfo> tensors_;                   // in data order
  std::map<std::string, size_t, std::less<>> index_;  // name -> tensors_ index
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (in the given order) to `path`. Tensors of any dtype; the
// header records their dtype and shape.
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_CHECKPOINT_SAFETENSORS_H_
