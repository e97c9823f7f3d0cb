// Tensors and views shared by every op-set implementation.
//
// A Tensor owns a dense, row-major, contiguous buffer. Ops take lightweight
// 2-D views (MatView / ConstMatView) with a row stride, so a model can hand an
// op one slice of a wider activation (e.g. the rope part of every head) without
// copying. Views never own memory: the caller keeps the Tensor alive.
#ifndef MOESERVE_KERNELS_TENSOR_H_
#define MOESERVE_KERNELS_TENSOR_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace moeserve {

// kF8E8M0, kI8 and kI64 are storage dtypes of checkpoints (DeepSeek-V4's
// power-of-two scales, FP4 experts as safetensors stores them, hash-routing
// tables). kF4E2M1x2 is one byte holding two FP4 e2m1 codes, the first in the
// low nibble: a [rows, n] tensor of it is the [rows, 2n] matrix of codes.
enum class DType : uint8_t { kF32, kBF16, kF8E4M3, kI32, kF8E8M0, kI8, kI64, kF4E2M1x2 };

// Where a Tensor's bytes live. The CPU op set reads kCpu tensors only; the
// CUDA op set (kernels/cuda/) reads kCuda tensors only.
enum class Device : uint8_t { kCpu, kCuda };

size_t DTypeSize(DType dtype);
std::string_view DTypeName(DType dtype);

// Row-major 2-D view of float32 data: element (r, c) is data[r * stride + c].
struct MatView {
  float* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t stride = 0;  // elements between consecutive rows, >= cols

  float* row(int64_t r) const { return data + r * stride; }
  // Columns [begin, begin + count) of every row.
  MatView Columns(int64_t begin, int64_t count) const {
    return {data + begin, rows, count, stride};
  }
  // Rows [begin, begin + count).
  MatView Rows(int64_t begin, int64_t count) const {
    return {data + begin * stride, count, cols, stride};
  }
};

struct ConstMatView {
  const float* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t stride = 0;

  ConstMatView() = default;
  ConstMatView(const float* d, int64_t r, int64_t c, int64_t s)
      : data(d), rows(r), cols(c), stride(s) {}
  ConstMatView(const MatView& v)  // NOLINT: a mutable view is usable read-only
      : data(v.data), rows(v.rows), cols(v.cols), stride(v.stride) {}

  const float* row(int64_t r) const { return data + r * stride; }
  ConstMatView Columns(int64_t begin, int64_t count) const {
    return {data + begin, rows, count, stride};
  }
  ConstMatView Rows(int64_t begin, int64_t count) const {
    return {data + begin * stride, count, cols, stride};
  }
};

// Owning dense tensor, in host memory unless made by FromStorage() with
// another device. Copying shares the buffer (like a shared_ptr); use Clone()
// for a deep copy (host tensors only).
class Tensor {
 public:
  Tensor() = default;

  // Uninitialised storage for `shape` elements of `dtype`.
  static Tensor Empty(DType dtype, std::vector<int64_t> shape);
  // Zero-filled.
  static Tensor Zeros(DType dtype, std::vector<int64_t> shape);
  // Float32 tensor holding a copy of `values`; `shape` must match its size.
  static Tensor FromF32(std::vector<int64_t> shape, const std::vector<float>& values);
  // A tensor over storage allocated elsewhere, e.g. device memory whose
  // deleter frees it (kernels/cuda/device_tensor.h). `storage` must hold at
  // least nbytes() bytes; the tensor keeps it alive. The pointers f32(),
  // raw() and mat() return point into that memory, wherever it is.
  static Tensor FromStorage(DType dtype, std::vector<int64_t> shape,
                            std::shared_ptr<std::byte[]> storage, Device device);

  Tensor Clone() const;  // requires device() == kCpu

  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[static_cast<size_t>(i)]; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype_); }
  bool empty() const { return storage_ == nullptr; }
  std::string ShapeString() const;  // "[16,256]"

  void* raw() { return storage_.get(); }
  const void* raw() const { return storage_.get(); }
  float* f32() { return static_cast<float*>(raw()); }
  const float* f32() const { return static_cast<const float*>(raw()); }

  // The tensor as a 2-D matrix: all leading dimensions folded into rows.
  // Requires dtype kF32 and rank >= 1.
  MatView mat();
  ConstMatView mat() const;

 private:
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCpu;
  std::vector<int64_t> shape_;
  std::shared_ptr<std::byte[]> storage_;
};

// Numeric conversions used by checkpoints and the CPU backend.
float Bf16ToF32(uint16_t bits);
uint16_t F32ToBf16(float value);    // round to nearest even, NaN preserved
float Fp8E4M3ToF32(uint8_t bits);   // e4m3fn: no infinities, 0x7f/0xff are NaN
uint8_t F32ToFp8E4M3(float value);  // round to nearest even, saturates at +-448
inline constexpr float kFp8E4M3Max = 448.0f;
// E8M0 (OCP MX): an unsigned power-of-two exponent, value 2^(bits - 127);
// 0xff is NaN. 0x00 is 2^-127, a float32 subnormal: every code but NaN is
// exact in float32.
float F8E8M0ToF32(uint8_t bits);
// FP4 e2m1 (OCP MX), the low 4 bits of `code`: sign, 2 exponent bits, 1
// mantissa bit; magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6; no NaN or infinity.
float Fp4E2M1ToF32(uint8_t code);

// Small helpers, defined once.
constexpr int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace moeserve

#endif  // MOESERVE_KERNELS_TENSOR_H_
