#include "kernels/cuda/device_buffer.h"

#include <algorithm>
#include <cstring>

#include "kernels/cuda/cuda_check.h"

namespace moeserve::cuda {

DeviceBuffer::~DeviceBuffer() {
  // Stream-ordered, and never fatal at teardown (the context may be gone).
  if (data_ != nullptr) (void)cudaFreeAsync(data_, stream_);
}

void* DeviceBuffer::Reserve(size_t bytes) {
  if (bytes <= capacity_ && data_ != nullptr) return data_;
  if (data_ != nullptr) MOESERVE_CUDA_CHECK(cudaFreeAsync(data_, stream_));
  data_ = nullptr;
  // Grow by at least a quarter so that slowly rising sizes do not
  // reallocate on every call.
  const size_t want = std::max<size_t>({bytes, capacity_ + capacity_ / 4, 1 << 20});
  const size_t rounded = (want + (size_t{1} << 20) - 1) >> 20 << 20;
  MOESERVE_CUDA_CHECK(cudaMallocAsync(&data_, rounded, stream_));
  capacity_ = rounded;
  return data_;
}

HostUploader::~HostUploader() {
  for (Slot& s : slots_) {
    if (s.done != nullptr) {
      (void)cudaEventSynchronize(s.done);
      (void)cudaEventDestroy(s.done);
    }
    if (s.pinned != nullptr) (void)cudaFreeHost(s.pinned);
  }
}

void HostUploader::Upload(const void* host, void* device, size_t bytes) {
  if (bytes == 0) return;
  // A copy captured into a graph would replay from a pinned slot that later
  // uploads reuse: stale bytes, silently. Break the capture instead, with an
  // operation capture does not allow, so that EndCapture fails and the
  // caller runs the step eagerly.
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  MOESERVE_CUDA_CHECK(cudaStreamIsCapturing(stream_, &capturing));
  if (capturing != cudaStreamCaptureStatusNone) {
    (void)cudaStreamSynchronize(stream_);  // invalidates the capture
    (void)cudaGetLastError();
    return;
  }
  Slot& s = slots_[static_cast<size_t>(next_)];
  next_ = (next_ + 1) % kSlots;
  if (s.done == nullptr) {
    MOESERVE_CUDA_CHECK(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
  } else {
    MOESERVE_CUDA_CHECK(cudaEventSynchronize(s.done));  // the slot's last copy is over
  }
  if (s.capacity < bytes) {
    if (s.pinned != nullptr) MOESERVE_CUDA_CHECK(cudaFreeHost(s.pinned));
    s.pinned = nullptr;
    s.capacity = std::max<size_t>(bytes, 64 << 10);
    MOESERVE_CUDA_CHECK(cudaMallocHost(&s.pinned, s.capacity));
  }
  std::memcpy(s.pinned, host, bytes);
  MOESERVE_CUDA_CHECK(cudaMemcpyAsync(device, s.pinned, bytes, cudaMemcpyHostToDevice, stream_));
  MOESERVE_CUDA_CHECK(cudaEventRecord(s.done, stream_));
}

const void* CachedUpload::Get(const std::vector<std::byte>& host, HostUploader& uploader) {
  if (valid_ && host.size() == last_.size() &&
      (host.empty() || std::memcmp(host.data(), last_.data(), host.size()) == 0)) {
    return buffer_.Reserve(host.size());
  }
  void* device = buffer_.Reserve(host.size());
  uploader.Upload(host.data(), device, host.size());
  last_ = host;
  valid_ = true;
  return device;
}

}  // namespace moeserve::cuda
