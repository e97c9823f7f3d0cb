// Device-side reads of one KV cache value in the row layout of
// kernels/kv_cache_layout.h, matching the CPU twin's DequantizeKvRow exactly
// (the e4m3 code decoded exactly, one float32 multiply by its tile's scale).
// Included by .cu files only.
#ifndef MOESERVE_KERNELS_CUDA_KV_CACHE_LOAD_CUH_
#define MOESERVE_KERNELS_CUDA_KV_CACHE_LOAD_CUH_

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/kv_cache.h"

namespace moeserve::cuda {

inline constexpr int32_t kKvF32 = static_cast<int32_t>(KvCacheDtype::kF32);
inline constexpr int32_t kKvBf16 = static_cast<int32_t>(KvCacheDtype::kBF16);

__device__ inline float Bf16BitsToFloat(uint16_t bits) {
  return __uint_as_float(static_cast<uint32_t>(bits) << 16);
}

// e4m3fn: (1 + m/8) 2^(e-7), subnormals m 2^-9, 0x7f/0xff NaN.
__device__ inline float E4M3ToFloat(uint8_t code) {
  const uint32_t e = (code >> 3) & 0xfu, m = code & 0x7u;
  float mag;
  if (e == 0) {
    mag = static_cast<float>(m) * 0.001953125f;  // exact
  } else if (e == 0xfu && m == 0x7u) {
    mag = __uint_as_float(0x7fc00000u);
  } else {
    mag = __uint_as_float(((e + 120u) << 23) | (m << 20));
  }
  return (code & 0x80u) ? -mag : mag;
}

// Column `col` of the cache row at `row` as float32.
__device__ inline float LoadKv(const KvRowDevice& l, const uint8_t* row, int64_t col) {
  if (l.dtype == kKvF32) return reinterpret_cast<const float*>(row)[col];
  if (l.dtype == kKvBf16) return Bf16BitsToFloat(reinterpret_cast<const uint16_t*>(row)[col]);
  if (col < l.quantized_cols) {
    const float scale = reinterpret_cast<const float*>(row + l.scales_offset)[col / l.tile];
    return E4M3ToFloat(row[col]) * scale;
  }
  return Bf16BitsToFloat(
      reinterpret_cast<const uint16_t*>(row + l.tail_offset)[col - l.quantized_cols]);
}

}  // namespace moeserve::cuda

#endif  // MOESERVE_KERNELS_CUDA_KV_CACHE_LOAD_CUH_
