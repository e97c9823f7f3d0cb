// Launchers of RMSNorm and rotary position embedding. Pointers are device
// addresses, strides in elements; work is queued on `stream`.
#ifndef MOESERVE_KERNELS_CUDA_NORM_ROPE_H_
#define MOESERVE_KERNELS_CUDA_NORM_ROPE_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace moeserve::cuda {

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, the sum of squares in
// double and everything else in float32 as the CPU twin does. `weight` is
// float32 or bf16 bits. In place allowed.
void LaunchRmsNorm(const float* x, int64_t x_stride, const void* weight, bool weight_bf16,
                   float eps, float* out, int64_t out_stride, int64_t rows, int64_t cols,
                   cudaStream_t stream);

// Rotates x [tokens * heads_per_token, 2 * half] in place: row r belongs to
// token r / heads_per_token at positions[token]. angle = float(position) *
// inv_freq[i] in float32, cos and sin of it in double rounded to float, then
// times attention_factor (the CPU twin's numerics).
void LaunchRope(float* x, int64_t x_stride, int64_t rows, int64_t half, int64_t heads_per_token,
                const int32_t* positions, const float* inv_freq, float attention_factor,
                bool interleaved, cudaStream_t stream);

}  // namespace moeserve::cuda

#endif  // MOESERVE_KERNELS_CUDA_NORM_ROPE_H_
