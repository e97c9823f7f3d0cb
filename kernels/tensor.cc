#include "kernels/tensor.h"

#include <bit>
#include <cassert>
#include <cmath>
#include <cstring>
#include <numeric>

namespace moeserve {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kBF16:
      return 2;
    case DType::kF8E4M3:
    case DType::kF8E8M0:
    case DType::kI8:
    case DType::kF4E2M1x2:
      return 1;
    case DType::kI64:
      return 8;
  }
  return 0;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kI32:
      return "I32";
    case DType::kBF16:
      return "BF16";
    case DType::kF8E4M3:
      return "F8_E4M3";
    case DType::kF8E8M0:
      return "F8_E8M0";
    case DType::kI8:
      return "I8";
    case DType::kI64:
      return "I64";
    case DType::kF4E2M1x2:
      return "F4_E2M1x2";
  }
  return "?";
}

int64_t Tensor::numel() const {
  return std::accumulate(shape_.begin(), shape_.end(), int64_t{1}, std::multiplies<>());
}

Tensor Tensor::Empty(DType dtype, std::vector<int64_t> shape) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  // Always allocate at least one byte so that an empty tensor with a shape
  // (e.g. [0, 256]) still has a non-null, distinct buffer.
  t.storage_ = std::shared_ptr<std::byte[]>(new std::byte[std::max<size_t>(t.nbytes(), 1)]);
  return t;
}

Tensor Tensor::Zeros(DType dtype, std::vector<int64_t> shape) {
  Tensor t = Empty(dtype, std::move(shape));
  std::memset(t.raw(), 0, t.nbytes());
  return t;
}

Tensor Tensor::FromF32(std::vector<int64_t> shape, const std::vector<float>& values) {
  Tensor t = Empty(DType::kF32, std::move(shape));
  assert(static_cast<size_t>(t.numel()) == values.size());
  std::memcpy(t.raw(), values.data(), t.nbytes());
  return t;
}

Tensor Tensor::FromStorage(DType dtype, std::vector<int64_t> shape,
                           std::shared_ptr<std::byte[]> storage, Device device) {
  Tensor t;
  t.dtype_ = dtype;
  t.device_ = device;
  t.shape_ = std::move(shape);
  t.storage_ = std::move(storage);
  return t;
}

Tensor Tensor::Clone() const {
  assert(device_ == Device::kCpu);
  Tensor t = Empty(dtype_, shape_);
  if (storage_ != nullptr) std::memcpy(t.raw(), raw(), nbytes());
  return t;
}

std::string Tensor::ShapeString() const {
  std::string s = "[";
  for (size_t i = 0; i < shape_.size(); ++i) {
    if (i > 0) s += ",";
    s += std::to_string(shape_[i]);
  }
  return s + "]";
}

MatView Tensor::mat() {
  assert(dtype_ == DType::kF32 && !shape_.empty());
  const int64_t cols = shape_.back();
  const int64_t rows = cols == 0 ? 0 : numel() / cols;
  return {f32(), rows, cols, cols};
}

ConstMatView Tensor::mat() const {
  assert(dtype_ == DType::kF32 && !shape_.empty());
  const int64_t cols = shape_.back();
  const int64_t rows = cols == 0 ? 0 : numel() / cols;
  return {f32(), rows, cols, cols};
}

float Bf16ToF32(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

uint16_t F32ToBf16(float value) {
  uint32_t u = std::bit_cast<uint32_t>(value);
  if (std::isnan(value)) return static_cast<uint16_t>((u >> 16) | 0x40);  // keep it a NaN
  u += 0x7fff + ((u >> 16) & 1);  // round to nearest, ties to even
  return static_cast<uint16_t>(u >> 16);
}

float Fp8E4M3ToF32(uint8_t bits) {
  const uint32_t sign = bits >> 7;
  const uint32_t exponent = (bits >> 3) & 0xf;
  const uint32_t mantissa = bits & 0x7;
  float magnitude;
  if (exponent == 0xf && mantissa == 0x7) {
    magnitude = std::numeric_limits<float>::quiet_NaN();
  } else if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -9);  // subnormal: m/8 * 2^-6
  } else {
    magnitude =
        std::ldexp(1.0f + static_cast<float>(mantissa) / 8.0f, static_cast<int>(exponent) - 7);
  }
  return sign ? -magnitude : magnitude;
}

float F8E8M0ToF32(uint8_t bits) {
  if (bits == 0xff) return std::numeric_limits<float>::quiet_NaN();
  return std::ldexp(1.0f, static_cast<int>(bits) - 127);
}

float Fp4E2M1ToF32(uint8_t code) {
  const uint32_t exponent = (code >> 1) & 0x3;
  const uint32_t mantissa = code & 0x1;
  // Exponent bias 1; exponent 0 is subnormal: m/2 * 2^0.
  const float magnitude = exponent == 0 ? 0.5f * static_cast<float>(mantissa)
                                        : std::ldexp(1.0f + 0.5f * static_cast<float>(mantissa),
                                                     static_cast<int>(exponent) - 1);
  return (code & 0x8) ? -magnitude : magnitude;
}

uint8_t F32ToFp8E4M3(float value) {
  if (std::isnan(value)) return 0x7f;
  const uint8_t sign = std::signbit(value) ? 0x80 : 0x00;
  float a = std::fabs(value);
  if (a >= kFp8E4M3Max) return sign | 0x7e;  // saturate to 448
  // Find the representable neighbours by scanning the 127 finite magnitudes;
  // codes are monotonic in value, so a binary search over codes is exact.
  uint8_t lo = 0, hi = 0x7e;
  while (hi - lo > 1) {
    const uint8_t mid = static_cast<uint8_t>((lo + hi) / 2);
    if (Fp8E4M3ToF32(mid) <= a) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  const float dl = a - Fp8E4M3ToF32(lo);
  const float dh = Fp8E4M3ToF32(hi) - a;
  uint8_t code;
  if (dl < dh) {
    code = lo;
  } else if (dh < dl) {
    code = hi;
  } else {
    code = (lo & 1) == 0 ? lo : hi;  // tie: even mantissa
  }
  return sign | code;
}

}  // namespace moeserve
