// Conversion of checkpoint weights to float32, the CPU compute dtype.
#include <array>

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

void ConvertBf16ToF32(const uint16_t* in, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = Bf16ToF32(in[i]);
}

}  // namespace moeserve
