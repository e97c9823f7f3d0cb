#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernel_util.cuh"
#include "kernels/cuda/kv_cache.h"
#include "kernels/cuda/kv_cache_load.cuh"

namespace moeserve::cuda {
namespace {

constexpr int kThreads = 128;

__device__ inline uint16_t FloatToBf16Bits(float x) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(x));  // round to nearest even
}

// One thread block per source row.
__global__ void __launch_bounds__(kThreads)
    KvCacheWriteKernel(const float* src, int64_t src_stride, int64_t rows, const int32_t* dst_rows,
                       int64_t cache_rows, uint8_t* cache, KvRowDevice l, uint32_t* error_word) {
  __shared__ float scratch[kThreads / kWarp];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t dst = dst_rows[r];
    if (dst < 0) continue;  // uniform across the block
    if (dst >= cache_rows) {
      if (threadIdx.x == 0) RaiseError(error_word, kErrCacheSlotOutsideCache);
      continue;
    }
    const float* x = src + r * src_stride;
    uint8_t* row = cache + dst * l.row_bytes;
    if (l.dtype == kKvF32) {
      for (int c = threadIdx.x; c < l.width; c += kThreads) reinterpret_cast<float*>(row)[c] = x[c];
      continue;
    }
    if (l.dtype == kKvBf16) {
      for (int c = threadIdx.x; c < l.width; c += kThreads) {
        reinterpret_cast<uint16_t*>(row)[c] = FloatToBf16Bits(x[c]);
      }
      continue;
    }
    // FP8: per tile, scale = amax / 448 and codes e4m3(x / scale), as the CPU twin.
    const int tiles = (l.quantized_cols + l.tile - 1) / l.tile;
    for (int t = 0; t < tiles; ++t) {
      const int begin = t * l.tile, end = min(l.quantized_cols, begin + l.tile);
      float amax = 0.0f;
      for (int c = begin + threadIdx.x; c < end; c += kThreads) amax = fmaxf(amax, fabsf(x[c]));
      amax = BlockMax(amax, scratch);
      const float scale = __fdiv_rn(amax, 448.0f);
      for (int c = begin + threadIdx.x; c < end; c += kThreads) {
        row[c] = scale == 0.0f ? 0
                               : static_cast<uint8_t>(__nv_cvt_float_to_fp8(
                                     __fdiv_rn(x[c], scale), __NV_SATFINITE, __NV_E4M3));
      }
      if (threadIdx.x == 0) reinterpret_cast<float*>(row + l.scales_offset)[t] = scale;
    }
    for (int c = l.quantized_cols + threadIdx.x; c < l.scales_offset; c += kThreads) row[c] = 0;
    uint16_t* tail = reinterpret_cast<uint16_t*>(row + l.tail_offset);
    const int tail_cols = l.width - l.quantized_cols;
    for (int c = threadIdx.x; c < tail_cols; c += kThreads) {
      tail[c] = FloatToBf16Bits(x[l.quantized_cols + c]);
    }
    for (int64_t b = l.tail_offset + 2 * tail_cols + threadIdx.x; b < l.row_bytes; b += kThreads) {
      row[b] = 0;  // padding
    }
  }
}

__global__ void KvGatherRowsKernel(const uint8_t* cache, KvRowDevice l, const int32_t* rows,
                                   int64_t n, float* out, int64_t out_stride) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const uint8_t* row = cache + static_cast<int64_t>(rows[i]) * l.row_bytes;
    float* o = out + i * out_stride;
    for (int c = threadIdx.x; c < l.width; c += blockDim.x) o[c] = LoadKv(l, row, c);
  }
}

}  // namespace

KvRowDevice ToDevice(const KvRowLayout& layout) {
  Require(layout.valid() && layout.row_bytes() < (int64_t{1} << 31),
          "kv cache: invalid row layout");
  KvRowDevice d;
  d.dtype = static_cast<int32_t>(layout.dtype);
  d.width = static_cast<int32_t>(layout.width);
  d.row_bytes = layout.row_bytes();
  if (layout.dtype == KvCacheDtype::kFP8E4M3) {
    d.quantized_cols = static_cast<int32_t>(layout.quantized_cols);
    d.tile = static_cast<int32_t>(layout.tile);
    d.scales_offset = static_cast<int32_t>(layout.scales_offset());
    d.tail_offset = static_cast<int32_t>(layout.tail_offset());
  }
  return d;
}

KvRowDevice F32Rows(int64_t width) {
  return ToDevice(KvRowLayout{KvCacheDtype::kF32, width, 0, 0});
}

void LaunchKvCacheWrite(const float* src, int64_t src_stride, int64_t rows, const int32_t* dst_rows,
                        int64_t cache_rows, uint8_t* cache, const KvRowDevice& layout,
                        uint32_t* error_word, cudaStream_t stream) {
  if (rows == 0) return;
  KvCacheWriteKernel<<<GridFor(rows, 1), kThreads, 0, stream>>>(
      src, src_stride, rows, dst_rows, cache_rows, cache, layout, error_word);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

void LaunchKvGatherRows(const uint8_t* cache, const KvRowDevice& layout, const int32_t* rows,
                        int64_t n, float* out, int64_t out_stride, cudaStream_t stream) {
  if (n == 0) return;
  KvGatherRowsKernel<<<GridFor(n, 1), 256, 0, stream>>>(cache, layout, rows, n, out, out_stride);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace moeserve::cuda
