// Device tensors: how the op set's Tensors point at GPU memory, and how data
// gets there and back.
//
// A device tensor is an ordinary Tensor made by Tensor::FromStorage with
// Device::kCuda, whose storage is cudaMalloc'ed memory freed by the storage's
// deleter. The Ops signatures need no change: CudaOps reads raw() / f32() /
// mat() as device addresses, and a MatView of a device tensor is a device
// view. Host code must never dereference them.
//
// Layouts, row-major like host tensors:
//   kF32, kBF16, kI32   dense.
//   kF8E4M3 weight [rows, cols]: the e4m3 codes, dense, then, at byte
//       Fp8ScalesOffset(rows, cols), DeepSeek's float32 128x128 block
//       scales (weight_scale_inv) as cuBLASLt's BLK128x128_32F mode reads
//       them: row-major [ceil(rows / 128), Fp8ScalesPitch(cols)], the pitch
//       being ceil(cols / 128) rounded up to a multiple of 4 (16 bytes), the
//       padding zero. w[r, c] = code[r, c] * scale[r / 128, c / 128].
//
// All functions here are synchronous (cudaMemcpy on the legacy default
// stream, which waits for the work queued on CudaOps' blocking stream), meant
// for loading weights and for tests.
#ifndef MOESERVE_KERNELS_CUDA_DEVICE_TENSOR_H_
#define MOESERVE_KERNELS_CUDA_DEVICE_TENSOR_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/tensor.h"

namespace moeserve::cuda {

inline constexpr int64_t kFp8Block = 128;

// Uninitialised device tensor (for kF8E4M3: room for codes and scales).
absl::StatusOr<Tensor> AllocateDevice(DType dtype, std::vector<int64_t> shape);

// Device copy of a host tensor, same dtype and shape. Not for FP8 weights,
// which need their scales: use UploadFp8Weight.
absl::StatusOr<Tensor> ToDevice(const Tensor& host);

// Device bf16 copy of a host float32 tensor (round to nearest even).
absl::StatusOr<Tensor> ToDeviceBf16(const Tensor& host_f32);

// Device FP8 weight [rows, cols] from checkpoint data: e4m3 `codes` and
// `scale_inv` [ceil(rows / 128), ceil(cols / 128)] float32 (partial edge
// blocks allowed), both in host memory.
absl::StatusOr<Tensor> UploadFp8Weight(const uint8_t* codes, int64_t rows, int64_t cols,
                                       const float* scale_inv);
// The same into `weight`, a device kF8E4M3 tensor [rows, cols] whose
// storage holds Fp8WeightBytes(rows, cols) (e.g. a backend's allocation).
absl::Status WriteFp8Weight(const uint8_t* codes, const float* scale_inv, Tensor& weight);

// Host copy of a device tensor, same dtype and shape (FP8: the codes only).
absl::StatusOr<Tensor> ToHost(const Tensor& device);

// Synchronous copies between host and device memory.
absl::Status CopyToDevice(void* device_dst, const void* host_src, size_t bytes);
absl::Status CopyToHost(void* host_dst, const void* device_src, size_t bytes);

// FP8 weight layout (see the file comment).
int64_t Fp8ScalesPitch(int64_t cols);
size_t Fp8ScalesOffset(int64_t rows, int64_t cols);
size_t Fp8WeightBytes(int64_t rows, int64_t cols);
// The device address of a device FP8 weight's block scales.
const float* Fp8Scales(const Tensor& weight);

}  // namespace moeserve::cuda

#endif  // MOESERVE_KERNELS_CUDA_DEVICE_TENSOR_H_
