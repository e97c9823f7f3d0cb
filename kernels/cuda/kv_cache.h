// The paged KV cache on the GPU: the row layout as kernels see it, the
// quantizing cache write and the dequantizing row gather. The byte layout is
// kernels/kv_cache_layout.h's, bit for bit: the same bytes as the CPU twin
// writes, read back to the same float32 values. Internal to kernels/cuda/.
#ifndef MOESERVE_KERNELS_CUDA_KV_CACHE_H_
#define MOESERVE_KERNELS_CUDA_KV_CACHE_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/kv_cache_layout.h"

namespace moeserve::cuda {

// KvRowLayout with its byte offsets computed once, passed to kernels by value.
struct KvRowDevice {
  int32_t dtype = 0;  // static_cast<int32_t>(KvCacheDtype)
  int32_t width = 0;
  int32_t quantized_cols = 0;
  int32_t tile = 1;
  int32_t scales_offset = 0;
  int32_t tail_offset = 0;
  int64_t row_bytes = 0;
};
KvRowDevice ToDevice(const KvRowLayout& layout);
// Rows of `width` plain floats (a scratch buffer read by the attention kernel).
KvRowDevice F32Rows(int64_t width);

// Stores src rows i < rows (width floats, row stride src_stride) in cache row
// dst_rows[i] (skipped when negative), quantizing as the layout says. A row
// at or past `cache_rows` is skipped and raises kErrCacheSlotOutsideCache.
void LaunchKvCacheWrite(const float* src, int64_t src_stride, int64_t rows, const int32_t* dst_rows,
                        int64_t cache_rows, uint8_t* cache, const KvRowDevice& layout,
                        uint32_t* error_word, cudaStream_t stream);

// out[i, 0:width] = cache row rows[i] read back as float32, for i < n.
void LaunchKvGatherRows(const uint8_t* cache, const KvRowDevice& layout, const int32_t* rows,
                        int64_t n, float* out, int64_t out_stride, cudaStream_t stream);

}  // namespace moeserve::cuda

#endif  // MOESERVE_KERNELS_CUDA_KV_CACHE_H_
