// Device scratch memory and host-to-device uploads for the CUDA op set.
//
// Everything here works in stream order on one stream: memory handed out is
// valid for the work queued after the call, and is released (or reused)
// only after the work queued before. None of it is thread safe.
#ifndef MOESERVE_KERNELS_CUDA_DEVICE_BUFFER_H_
#define MOESERVE_KERNELS_CUDA_DEVICE_BUFFER_H_

#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace moeserve::cuda {

// Grow-only device memory, reused by every call. Reserve() may replace the
// buffer (freeing the old one in stream order), so a pointer it returned is
// good until the next Reserve() on the same buffer.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(cudaStream_t stream) : stream_(stream) {}
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // At least `bytes` bytes (256-byte aligned); contents are not preserved
  // when the buffer grows. Aborts when the device is out of memory.
  void* Reserve(size_t bytes);
  size_t capacity() const { return capacity_; }

 private:
  cudaStream_t stream_;
  void* data_ = nullptr;
  size_t capacity_ = 0;
};

// Offsets of several arrays packed into one Reserve()d region, each aligned
// to 256 bytes (what cuBLASLt likes best).
class ScratchLayout {
 public:
  template <class T>
  size_t Add(int64_t count) {
    const size_t offset = bytes_;
    bytes_ += (static_cast<size_t>(count) * sizeof(T) + 255) / 256 * 256;
    return offset;
  }
  size_t bytes() const { return bytes_; }

 private:
  size_t bytes_ = 0;
};

template <class T>
T* At(void* base, size_t offset) {
  return reinterpret_cast<T*>(static_cast<char*>(base) + offset);
}

// Copies small host arrays (batch metadata) to device memory, truly
// asynchronously, through a ring of pinned buffers: the host array may be
// reused as soon as Upload() returns. A pinned slot is reused only after the
// copy out of it has finished.
class HostUploader {
 public:
  explicit HostUploader(cudaStream_t stream) : stream_(stream) {}
  ~HostUploader();
  HostUploader(const HostUploader&) = delete;
  HostUploader& operator=(const HostUploader&) = delete;

  void Upload(const void* host, void* device, size_t bytes);

 private:
  struct Slot {
    void* pinned = nullptr;
    size_t capacity = 0;
    cudaEvent_t done = nullptr;  // recorded after the last copy out of `pinned`
  };
  static constexpr int kSlots = 8;
  cudaStream_t stream_;
  std::array<Slot, kSlots> slots_{};
  int next_ = 0;
};

// Device copy of host bytes that change rarely (a step's block tables and
// positions are the same for every layer): uploads only when the content
// differs from the last upload. The device copy stays valid until the next
// Get() with different content.
class CachedUpload {
 public:
  explicit CachedUpload(cudaStream_t stream) : buffer_(stream) {}
  const void* Get(const std::vector<std::byte>& host, HostUploader& uploader);

 private:
  DeviceBuffer buffer_;
  std::vector<std::byte> last_;
  bool valid_ = false;
};

}  // namespace moeserve::cuda

#endif  // MOESERVE_KERNELS_CUDA_DEVICE_BUFFER_H_
