// RMSNorm and RoPE kernels, written to round exactly where the CPU twin
// rounds: explicit __f*_rn intrinsics keep the compiler from contracting a
// multiply and an add into one fused operation the CPU does not do.
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernel_util.cuh"
#include "kernels/cuda/norm_rope.h"

namespace moeserve::cuda {
namespace {

constexpr int kThreads = 256;

__device__ inline float LoadWeight(const void* w, bool bf16, int64_t i) {
  return bf16 ? __uint_as_float(static_cast<uint32_t>(static_cast<const uint16_t*>(w)[i]) << 16)
              : static_cast<const float*>(w)[i];
}

__global__ void RmsNormKernel(const float* x, int64_t xs, const void* weight, bool weight_bf16,
                              float eps, float* out, int64_t os, int64_t rows, int64_t cols) {
  __shared__ double scratch[kThreads / kWarp];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* in = x + r * xs;
    double sum_sq = 0.0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const double v = static_cast<double>(in[c]);
      sum_sq += v * v;
    }
    sum_sq = BlockSum(sum_sq, scratch);
    const float mean = cols == 0 ? 0.0f : static_cast<float>(sum_sq / static_cast<double>(cols));
    const float inv_rms = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, eps)));
    float* o = out + r * os;  // may equal `in`: each element is read before it is written
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      o[c] = __fmul_rn(__fmul_rn(in[c], inv_rms), LoadWeight(weight, weight_bf16, c));
    }
  }
}

__global__ void RopeKernel(float* x, int64_t xs, int64_t rows, int64_t half,
                           int64_t heads_per_token, const int32_t* positions, const float* inv_freq,
                           float factor, bool interleaved) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float pos = static_cast<float>(positions[r / heads_per_token]);
    float* v = x + r * xs;
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
      const double angle = static_cast<double>(__fmul_rn(pos, inv_freq[i]));
      const float c = __fmul_rn(static_cast<float>(cos(angle)), factor);
      const float s = __fmul_rn(static_cast<float>(sin(angle)), factor);
      float* pa = interleaved ? v + 2 * i : v + i;
      float* pb = interleaved ? v + 2 * i + 1 : v + i + half;
      const float a = *pa, b = *pb;
      *pa = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
      *pb = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
    }
  }
}

}  // namespace

void LaunchRmsNorm(const float* x, int64_t x_stride, const void* weight, bool weight_bf16,
                   float eps, float* out, int64_t out_stride, int64_t rows, int64_t cols,
                   cudaStream_t stream) {
  if (rows == 0) return;
  RmsNormKernel<<<GridFor(rows, 1), kThreads, 0, stream>>>(x, x_stride, weight, weight_bf16, eps,
                                                           out, out_stride, rows, cols);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

void LaunchRope(float* x, int64_t x_stride, int64_t rows, int64_t half, int64_t heads_per_token,
                const int32_t* positions, const float* inv_freq, float attention_factor,
                bool interleaved, cudaStream_t stream) {
  if (rows == 0 || half == 0) return;
  const int threads = half >= 128 ? 128 : 32;
  RopeKernel<<<GridFor(rows, 1), threads, 0, stream>>>(
      x, x_stride, rows, half, heads_per_token, positions, inv_freq, attention_factor, interleaved);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace moeserve::cuda
