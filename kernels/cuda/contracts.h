// Host-side checks and packing shared by the files of the CUDA op set.
// Internal to kernels/cuda/.
#ifndef MOESERVE_KERNELS_CUDA_CONTRACTS_H_
#define MOESERVE_KERNELS_CUDA_CONTRACTS_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/ops.h"

namespace moeserve::cuda {

// A well-formed view: non-negative sizes, stride >= cols when it has more
// than one row, data unless empty.
void RequireView(ConstMatView v, const char* name);

// A device tensor of rank 2 and shape [rows, cols] with one of two dtypes.
void RequireDeviceWeight(const Tensor& w, int64_t rows, int64_t cols, DType a, DType b,
                         const char* what);

// One sequence of a ragged batch against `batch_rows` rows and a cache (the
// CPU twin's RequireSeq): rows inside the batch, num_tokens <= context_len,
// a block table covering the context with ids inside the cache.
void RequireSeq(const SeqSlice& seq, int64_t batch_rows, const PagedCacheView& cache);

// A SeqTable's host side against `batch_rows` rows and a cache: arrays
// present, bounds consistent (max_context within max_blocks blocks). Its
// arrays are device memory the host does not read; the model checks a
// step's sequences before uploading them.
void RequireTable(const SeqTable& table, int64_t batch_rows, const PagedCacheView& cache);

// Host bytes of several arrays, each 16-byte aligned, uploaded as one blob.
class HostPack {
 public:
  template <class T>
  size_t Put(const T* data, size_t count) {
    const size_t offset = (bytes_.size() + 15) / 16 * 16;
    bytes_.resize(offset + count * sizeof(T));
    if (count > 0) std::memcpy(bytes_.data() + offset, data, count * sizeof(T));
    return offset;
  }
  template <class T>
  size_t Put(const std::vector<T>& v) {
    return Put(v.data(), v.size());
  }
  const std::vector<std::byte>& bytes() const { return bytes_; }

 private:
  std::vector<std::byte> bytes_;
};

template <class T>
const T* DeviceAt(const void* base, size_t offset) {
  return reinterpret_cast<const T*>(static_cast<const char*>(base) + offset);
}

}  // namespace moeserve::cuda

#endif  // MOESERVE_KERNELS_CUDA_CONTRACTS_H_
