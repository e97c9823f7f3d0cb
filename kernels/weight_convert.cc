// Conversion of checkpoint weights to float32, the CPU compute dtype.
#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/host_weight.h"
#include "kernels/ops.h"

namespace moeserve {
namespace {

// Every e4m3fn code decoded once; the table is built on first use
// (thread-safe static initialisation).
const std::array<float, 256>& Fp8Table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int code = 0; code < 256; ++code)
      t[static_cast<size_t>(code)] = Fp8E4M3ToF32(static_cast<uint8_t>(code));
    return t;
  }();
  return table;
}

// The 16 e2m1 codes decoded once.
const std::array<float, 16>& Fp4Table() {
  static const std::array<float, 16> table = [] {
    std::array<float, 16> t{};
    for (int code = 0; code < 16; ++code)
      t[static_cast<size_t>(code)] = Fp4E2M1ToF32(static_cast<uint8_t>(code));
    return t;
  }();
  return table;
}

}  // namespace

// w = decode(q) * scale_inv of the block, one float32 multiply, as DeepSeek's
// weight_dequant kernel does.
void DequantizeFp8Blocks(const uint8_t* q, int64_t rows, int64_t cols, const float* scale_inv,
                         int64_t block, float* out) {
  const std::array<float, 256>& table = Fp8Table();
  const int64_t scale_cols = CeilDiv(cols, block);
  for (int64_t r = 0; r < rows; ++r) {
    const float* scale_row = scale_inv + (r / block) * scale_cols;
    const uint8_t* in = q + r * cols;
    float* o = out + r * cols;
    for (int64_t c = 0; c < cols; ++c) o[c] = table[in[c]] * scale_row[c / block];
  }
}

void DequantizeFp4Blocks(const uint8_t* packed, int64_t rows, int64_t cols, const float* scale,
                         int64_t block, float* out) {
  const std::array<float, 16>& table = Fp4Table();
  const int64_t scale_cols = CeilDiv(cols, block);
  for (int64_t r = 0; r < rows; ++r) {
    const float* scale_row = scale + r * scale_cols;
    const uint8_t* in = packed + r * (cols / 2);
    float* o = out + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      const uint8_t byte = in[c / 2];
      const uint8_t code = (c % 2 == 0) ? (byte & 0xf) : (byte >> 4);
      o[c] = table[code] * scale_row[c / block];
    }
  }
}

void ConvertBf16ToF32(const uint16_t* in, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = Bf16ToF32(in[i]);
}

absl::StatusOr<Tensor> HostWeightToF32(const HostWeight& w) {
  if (w.dtype == DType::kF4E2M1x2) {
    if (w.shape.size() != 2 || w.scale_inv == nullptr || w.block <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", std::string(w.name), ": F4_E2M1x2 weight without 2-D shape and block scales"));
    }
    const int64_t rows = w.shape[0], cols = 2 * w.shape[1];
    Tensor out = Tensor::Empty(DType::kF32, {rows, cols});
    DequantizeFp4Blocks(static_cast<const uint8_t*>(w.data), rows, cols, w.scale_inv, w.block,
                        out.f32());
    return out;
  }
  Tensor out = Tensor::Empty(DType::kF32, std::vector<int64_t>(w.shape.begin(), w.shape.end()));
  const auto n = out.numel();
  switch (w.dtype) {
    case DType::kF32:
      if (n > 0) std::memcpy(out.f32(), w.data, static_cast<size_t>(n) * sizeof(float));
      return out;
    case DType::kBF16:
      // The data need not be 2-byte aligned; copy out when it is not.
      if (reinterpret_cast<uintptr_t>(w.data) % alignof(uint16_t) == 0) {
        ConvertBf16ToF32(static_cast<const uint16_t*>(w.data), n, out.f32());
      } else {
        std::vector<uint16_t> aligned(static_cast<size_t>(n));
        if (n > 0) std::memcpy(aligned.data(), w.data, aligned.size() * sizeof(uint16_t));
        ConvertBf16ToF32(aligned.data(), n, out.f32());
      }
      return out;
    case DType::kF8E4M3:
      if (w.shape.size() != 2 || w.scale_inv == nullptr || w.block <= 0) break;
      DequantizeFp8Blocks(static_cast<const uint8_t*>(w.data), w.shape[0], w.shape[1], w.scale_inv,
                          w.block, out.f32());
      return out;
    default:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tensor ", std::string(w.name), ": ", std::string(DTypeName(w.dtype)),
                   w.dtype == DType::kF8E4M3 ? " weight without 2-D shape and block scales"
                                             : " is not a weight dtype"));
}

}  // namespace moeserve
