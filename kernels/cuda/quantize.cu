#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernel_util.cuh"
#include "kernels/cuda/quantize.h"

namespace moeserve::cuda {
namespace {

constexpr int kBlock = 128;        // channels per scale
constexpr int kWarpsPerBlock = 8;  // one warp per (row, channel block)
constexpr float kFp8Max = 448.0f;

__global__ void ToBf16Kernel(const float* x, int64_t xs, int64_t rows, int64_t cols, uint16_t* out,
                             int64_t ld) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      out[r * ld + c] = __bfloat16_as_ushort(__float2bfloat16_rn(x[r * xs + c]));
    }
  }
}

// The group of row r: the g with offsets[g] <= r < offsets[g + 1].
__device__ inline int64_t FindGroup(const int32_t* offsets, int64_t groups, int64_t r) {
  int64_t lo = 0, hi = groups - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (offsets[mid] <= r) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

__device__ inline int64_t ScaleIndex(const int32_t* offsets, int64_t groups, int64_t rows,
                                     int64_t kb_count, int64_t r, int64_t kb) {
  int64_t first = 0, count = rows;
  if (offsets != nullptr) {
    const int64_t g = FindGroup(offsets, groups, r);
    first = offsets[g];
    count = offsets[g + 1] - first;
  }
  return kb_count * first + kb * count + (r - first);
}

__global__ void QuantizeFp8Kernel(const float* x, int64_t xs, int64_t x_rows, int64_t rows,
                                  int64_t cols, uint8_t* codes, int64_t ld, float* scales,
                                  const int32_t* offsets, int64_t groups) {
  const int64_t kb_count = (cols + kBlock - 1) / kBlock;
  const int64_t pairs = rows * kb_count;
  const int lane = threadIdx.x % kWarp;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
       p < pairs; p += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    const int64_t r = p / kb_count, kb = p % kb_count;
    const int64_t c0 = kb * kBlock;
    float v[kBlock / kWarp];
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < kBlock / kWarp; ++i) {
      const int64_t c = c0 + lane + i * kWarp;
      v[i] = (r < x_rows && c < cols) ? x[r * xs + c] : 0.0f;
      amax = fmaxf(amax, fabsf(v[i]));
    }
    amax = WarpMax(amax);
    const float s = amax > 0.0f ? __fdiv_rn(amax, kFp8Max) : 1.0f;
#pragma unroll
    for (int i = 0; i < kBlock / kWarp; ++i) {
      const int64_t c = c0 + lane + i * kWarp;
      if (c < ld) {
        codes[r * ld + c] =
            c < cols ? __nv_cvt_float_to_fp8(__fdiv_rn(v[i], s), __NV_SATFINITE, __NV_E4M3) : 0;
      }
    }
    if (lane == 0) scales[ScaleIndex(offsets, groups, rows, kb_count, r, kb)] = s;
  }
  // Columns [round_up(cols, 128), ld) exist only when ld > that; zero them too.
  const int64_t tail_begin = kb_count * kBlock;
  if (tail_begin < ld) {
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
      for (int64_t c = tail_begin + threadIdx.x; c < ld; c += blockDim.x) codes[r * ld + c] = 0;
    }
  }
}

__device__ inline float Fp8ToFloat(uint8_t code) {
  __nv_fp8_e4m3 v;
  v.__x = code;
  return static_cast<float>(v);
}

__global__ void DequantizeActKernel(const uint8_t* codes, int64_t ld, const float* scales,
                                    int64_t rows, int64_t cols, const int32_t* offsets,
                                    int64_t groups, float* out) {
  const int64_t kb_count = (cols + kBlock - 1) / kBlock;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const float s = scales[ScaleIndex(offsets, groups, rows, kb_count, r, c / kBlock)];
      out[r * cols + c] = __fmul_rn(Fp8ToFloat(codes[r * ld + c]), s);
    }
  }
}

__global__ void DequantizeWeightKernel(const uint8_t* codes, const float* scales, int64_t pitch,
                                       int64_t rows, int64_t cols, float* out) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* srow = scales + (r / kBlock) * pitch;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      out[r * cols + c] = __fmul_rn(Fp8ToFloat(codes[r * cols + c]), srow[c / kBlock]);
    }
  }
}

}  // namespace

void LaunchToBf16(const float* x, int64_t x_stride, int64_t rows, int64_t cols, uint16_t* out,
                  int64_t ld, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  ToBf16Kernel<<<GridFor(rows, 1), 256, 0, stream>>>(x, x_stride, rows, cols, out, ld);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

void LaunchQuantizeFp8(const float* x, int64_t x_stride, int64_t x_rows, int64_t rows, int64_t cols,
                       uint8_t* codes, int64_t ld, float* scales, const int32_t* group_offsets,
                       int64_t num_groups, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  const int64_t pairs = rows * ((cols + kBlock - 1) / kBlock);
  QuantizeFp8Kernel<<<GridFor(pairs, kWarpsPerBlock), kWarpsPerBlock * kWarp, 0, stream>>>(
      x, x_stride, x_rows, rows, cols, codes, ld, scales, group_offsets, num_groups);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

void LaunchDequantizeFp8Activations(const uint8_t* codes, int64_t ld, const float* scales,
                                    int64_t rows, int64_t cols, const int32_t* group_offsets,
                                    int64_t num_groups, float* out, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  DequantizeActKernel<<<GridFor(rows, 1), 256, 0, stream>>>(codes, ld, scales, rows, cols,
                                                            group_offsets, num_groups, out);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

void LaunchDequantizeFp8Weight(const uint8_t* codes, const float* scales, int64_t scale_pitch,
                               int64_t rows, int64_t cols, float* out, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  DequantizeWeightKernel<<<GridFor(rows, 1), 256, 0, stream>>>(codes, scales, scale_pitch, rows,
                                                               cols, out);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace moeserve::cuda
