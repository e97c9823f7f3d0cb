#include "kernels/cuda/device_tensor.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_status.h"

namespace moeserve::cuda {
namespace {

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<Tensor> Allocate(DType dtype, std::vector<int64_t> shape, size_t bytes) {
  for (int64_t d : shape) {
    if (d < 0) return absl::InvalidArgumentError("device tensor with a negative dimension");
  }
  void* ptr = nullptr;
  // At least one byte, so that an empty tensor still has storage (as on the host).
  if (absl::Status s = CudaStatus(cudaMalloc(&ptr, std::max<size_t>(bytes, 1)),
                                  absl::StrCat("cudaMalloc of ", bytes, " bytes"));
      !s.ok()) {
    return s;
  }
  // The deleter ignores errors: at process exit the context may already be gone.
  std::shared_ptr<std::byte[]> storage(static_cast<std::byte*>(ptr),
                                       [](std::byte* p) { (void)cudaFree(p); });
  return Tensor::FromStorage(dtype, std::move(shape), std::move(storage), Device::kCuda);
}

}  // namespace

int64_t Fp8ScalesPitch(int64_t cols) { return (CeilDiv(cols, kFp8Block) + 3) / 4 * 4; }

size_t Fp8ScalesOffset(int64_t rows, int64_t cols) {
  return (static_cast<size_t>(rows * cols) + 255) / 256 * 256;
}

size_t Fp8WeightBytes(int64_t rows, int64_t cols) {
  return Fp8ScalesOffset(rows, cols) +
         static_cast<size_t>(CeilDiv(rows, kFp8Block) * Fp8ScalesPitch(cols)) * sizeof(float);
}

const float* Fp8Scales(const Tensor& weight) {
  return reinterpret_cast<const float*>(static_cast<const char*>(weight.raw()) +
                                        Fp8ScalesOffset(weight.dim(0), weight.dim(1)));
}

absl::StatusOr<Tensor> AllocateDevice(DType dtype, std::vector<int64_t> shape) {
  if (dtype == DType::kF8E4M3) {
    if (shape.size() != 2) return absl::InvalidArgumentError("a device FP8 tensor must be 2-D");
    const size_t bytes = Fp8WeightBytes(shape[0], shape[1]);
    return Allocate(dtype, std::move(shape), bytes);
  }
  const size_t bytes = static_cast<size_t>(NumElements(shape)) * DTypeSize(dtype);
  return Allocate(dtype, std::move(shape), bytes);
}

absl::Status CopyToDevice(void* device_dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return CudaStatus(cudaMemcpy(device_dst, host_src, bytes, cudaMemcpyHostToDevice),
                    "copy to the device");
}

absl::Status CopyToHost(void* host_dst, const void* device_src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return CudaStatus(cudaMemcpy(host_dst, device_src, bytes, cudaMemcpyDeviceToHost),
                    "copy to the host");
}

absl::StatusOr<Tensor> ToDevice(const Tensor& host) {
  if (host.device() != Device::kCpu)
    return absl::InvalidArgumentError("ToDevice of a device tensor");
  if (host.dtype() == DType::kF8E4M3) {
    return absl::InvalidArgumentError("FP8 weights go to the device with UploadFp8Weight");
  }
  auto t = AllocateDevice(host.dtype(), host.shape());
  if (!t.ok()) return t.status();
  if (absl::Status s = CopyToDevice(t->raw(), host.raw(), host.nbytes()); !s.ok()) return s;
  return t;
}

absl::StatusOr<Tensor> ToDeviceBf16(const Tensor& host_f32) {
  if (host_f32.device() != Device::kCpu || host_f32.dtype() != DType::kF32) {
    return absl::InvalidArgumentError("ToDeviceBf16 needs a host F32 tensor");
  }
  std::vector<uint16_t> bits(static_cast<size_t>(host_f32.numel()));
  for (size_t i = 0; i < bits.size(); ++i) bits[i] = F32ToBf16(host_f32.f32()[i]);
  auto t = AllocateDevice(DType::kBF16, host_f32.shape());
  if (!t.ok()) return t.status();
  if (absl::Status s = CopyToDevice(t->raw(), bits.data(), bits.size() * sizeof(uint16_t));
      !s.ok()) {
    return s;
  }
  return t;
}

absl::StatusOr<Tensor> UploadFp8Weight(const uint8_t* codes, int64_t rows, int64_t cols,
                                       const float* scale_inv) {
  if (rows <= 0 || cols <= 0) return absl::InvalidArgumentError("FP8 weight with an empty shape");
  auto t = AllocateDevice(DType::kF8E4M3, {rows, cols});
  if (!t.ok()) return t.status();
  if (absl::Status s = WriteFp8Weight(codes, scale_inv, *t); !s.ok()) return s;
  return t;
}

absl::Status WriteFp8Weight(const uint8_t* codes, const float* scale_inv, Tensor& weight) {
  if (weight.device() != Device::kCuda || weight.dtype() != DType::kF8E4M3 || weight.rank() != 2 ||
      weight.dim(0) <= 0 || weight.dim(1) <= 0) {
    return absl::InvalidArgumentError("WriteFp8Weight needs a non-empty 2-D device FP8 tensor");
  }
  const int64_t rows = weight.dim(0), cols = weight.dim(1);
  const int64_t block_rows = CeilDiv(rows, kFp8Block), block_cols = CeilDiv(cols, kFp8Block);
  const int64_t pitch = Fp8ScalesPitch(cols);
  std::vector<float> scales(static_cast<size_t>(block_rows * pitch), 0.0f);
  for (int64_t r = 0; r < block_rows; ++r) {
    for (int64_t c = 0; c < block_cols; ++c) {
      scales[static_cast<size_t>(r * pitch + c)] = scale_inv[r * block_cols + c];
    }
  }
  if (absl::Status s = CopyToDevice(weight.raw(), codes, static_cast<size_t>(rows * cols));
      !s.ok()) {
    return s;
  }
  void* scale_dst = static_cast<char*>(weight.raw()) + Fp8ScalesOffset(rows, cols);
  return CopyToDevice(scale_dst, scales.data(), scales.size() * sizeof(float));
}

absl::StatusOr<Tensor> ToHost(const Tensor& device) {
  if (device.device() != Device::kCuda)
    return absl::InvalidArgumentError("ToHost of a host tensor");
  Tensor host = Tensor::Empty(device.dtype(), device.shape());
  if (absl::Status s = CopyToHost(host.raw(), device.raw(), host.nbytes()); !s.ok()) return s;
  return host;
}

}  // namespace moeserve::cuda
