#include "kernels/kv_cache_layout.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "kernels/tensor.h"

namespace moeserve {
namespace {

int64_t AlignUp4(int64_t bytes) { return (bytes + 3) / 4 * 4; }

// Every e4m3fn code decoded once (thread-safe static initialisation): the
// attention reads every context value through it at every step.
const std::array<float, 256>& Fp8Table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int code = 0; code < 256; ++code) {
      t[static_cast<size_t>(code)] = Fp8E4M3ToF32(static_cast<uint8_t>(code));
    }
    return t;
  }();
  return table;
}

void StoreBf16(const float* in, int64_t n, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t bits = F32ToBf16(in[i]);
    std::memcpy(out + 2 * i, &bits, 2);
  }
}

void LoadBf16(const uint8_t* in, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t bits;
    std::memcpy(&bits, in + 2 * i, 2);
    out[i] = Bf16ToF32(bits);
  }
}

}  // namespace

std::string_view KvCacheDtypeName(KvCacheDtype dtype) {
  switch (dtype) {
    case KvCacheDtype::kF32:
      return "fp32";
    case KvCacheDtype::kBF16:
      return "bf16";
    case KvCacheDtype::kFP8E4M3:
      return "fp8";
  }
  return "?";
}

bool KvRowLayout::valid() const {
  if (width <= 0) return false;
  switch (dtype) {
    case KvCacheDtype::kF32:
    case KvCacheDtype::kBF16:
      return true;
    case KvCacheDtype::kFP8E4M3:
      return quantized_cols > 0 && quantized_cols <= width && tile > 0;
  }
  return false;
}

int64_t KvRowLayout::num_tiles() const {
  return dtype == KvCacheDtype::kFP8E4M3 ? CeilDiv(quantized_cols, tile) : 0;
}

int64_t KvRowLayout::scales_offset() const { return AlignUp4(quantized_cols); }

int64_t KvRowLayout::tail_offset() const { return scales_offset() + 4 * num_tiles(); }

int64_t KvRowLayout::row_bytes() const {
  switch (dtype) {
    case KvCacheDtype::kF32:
      return 4 * width;
    case KvCacheDtype::kBF16:
      return 2 * width;
    case KvCacheDtype::kFP8E4M3:
      return AlignUp4(tail_offset() + 2 * (width - quantized_cols));
  }
  return 0;
}

KvRowLayout MlaKvRowLayout(KvCacheDtype dtype, int64_t kv_lora_rank, int64_t rope_dim) {
  KvRowLayout l{dtype, kv_lora_rank + rope_dim, 0, 0};
  if (dtype == KvCacheDtype::kFP8E4M3) {
    l.quantized_cols = kv_lora_rank;
    l.tile = kKvFp8MlaTile;
  }
  return l;
}

KvRowLayout GqaKvRowLayout(KvCacheDtype dtype, int64_t kv_heads, int64_t head_dim) {
  KvRowLayout l{dtype, 2 * kv_heads * head_dim, 0, 0};
  if (dtype == KvCacheDtype::kFP8E4M3) {
    l.quantized_cols = l.width;
    l.tile = head_dim;
  }
  return l;
}

void QuantizeKvRow(const KvRowLayout& layout, const float* in, uint8_t* out) {
  switch (layout.dtype) {
    case KvCacheDtype::kF32:
      std::memcpy(out, in, static_cast<size_t>(layout.width) * sizeof(float));
      return;
    case KvCacheDtype::kBF16:
      StoreBf16(in, layout.width, out);
      return;
    case KvCacheDtype::kFP8E4M3:
      break;
  }
  std::memset(out, 0, static_cast<size_t>(layout.row_bytes()));
  uint8_t* scales = out + layout.scales_offset();
  for (int64_t t = 0; t < layout.num_tiles(); ++t) {
    const int64_t begin = t * layout.tile;
    const int64_t end = std::min(layout.quantized_cols, begin + layout.tile);
    float amax = 0.0f;
    for (int64_t c = begin; c < end; ++c) amax = std::fmax(amax, std::fabs(in[c]));
    const float scale = amax / kFp8E4M3Max;
    std::memcpy(scales + 4 * t, &scale, 4);
    if (scale == 0.0f) continue;  // codes stay 0 (+0.0)
    for (int64_t c = begin; c < end; ++c) out[c] = F32ToFp8E4M3(in[c] / scale);
  }
  StoreBf16(in + layout.quantized_cols, layout.width - layout.quantized_cols,
            out + layout.tail_offset());
}

void DequantizeKvRow(const KvRowLayout& layout, const uint8_t* in, float* out) {
  switch (layout.dtype) {
    case KvCacheDtype::kF32:
      std::memcpy(out, in, static_cast<size_t>(layout.width) * sizeof(float));
      return;
    case KvCacheDtype::kBF16:
      LoadBf16(in, layout.width, out);
      return;
    case KvCacheDtype::kFP8E4M3:
      break;
  }
  const std::array<float, 256>& table = Fp8Table();
  const uint8_t* scales = in + layout.scales_offset();
  for (int64_t t = 0; t < layout.num_tiles(); ++t) {
    float scale;
    std::memcpy(&scale, scales + 4 * t, 4);
    const int64_t begin = t * layout.tile;
    const int64_t end = std::min(layout.quantized_cols, begin + layout.tile);
    for (int64_t c = begin; c < end; ++c) out[c] = table[in[c]] * scale;
  }
  LoadBf16(in + layout.tail_offset(), layout.width - layout.quantized_cols,
           out + layout.quantized_cols);
}

}  // namespace moeserve
