// Launchers of the CUDA op set's row-wise and elementwise kernels. Pointers
// are device addresses; strides are in elements. Every launcher queues its
// work on `stream` and returns at once. `error_word` may be null.
#ifndef MOESERVE_KERNELS_CUDA_ELEMENTWISE_H_
#define MOESERVE_KERNELS_CUDA_ELEMENTWISE_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace moeserve::cuda {

// out[t] = table[ids[t]]; the table is float32 or bf16 (raw bits), [vocab,
// hidden]. An id outside [0, vocab) raises kErrTokenOutsideVocab and writes
// NaN.
void LaunchEmbedding(const void* table, bool table_bf16, int64_t vocab, int64_t hidden,
                     const int32_t* ids, int64_t n, float* out, int64_t out_stride,
                     uint32_t* error_word, cudaStream_t stream);

// y += x, [rows, cols].
void LaunchAdd(const float* x, int64_t x_stride, float* y, int64_t y_stride, int64_t rows,
               int64_t cols, cudaStream_t stream);

// out = log_softmax(x) per row, as the CPU twin computes it (max in float,
// sum of exponentials in double, one rounding at the end). In place allowed.
void LaunchLogSoftmax(const float* x, int64_t x_stride, float* out, int64_t out_stride,
                      int64_t rows, int64_t cols, cudaStream_t stream);

// out[i] = x[rows[i]] for i < n. With `allow_padding`, rows[i] == -1 gives a
// zero row; any other index outside [0, x_rows) raises kErrRowOutsideMatrix
// and writes NaN.
void LaunchGatherRows(const float* x, int64_t x_stride, int64_t x_rows, int64_t cols,
                      const int32_t* rows, int64_t n, float* out, int64_t out_stride,
                      bool allow_padding, uint32_t* error_word, cudaStream_t stream);

// y[rows[i]] += weights[i] * x[i] for i = 0, 1, ..., n - 1 in that order (so
// repeated rows accumulate exactly as on the CPU), without fused multiply-add.
void LaunchScatterAddRows(const float* x, int64_t x_stride, int64_t n, int64_t cols,
                          const int32_t* rows, const float* weights, float* y, int64_t y_stride,
                          int64_t y_rows, uint32_t* error_word, cudaStream_t stream);

// dst[dst_rows[r] * dst_stride ...] = src[r] for every r with dst_rows[r] >= 0
// (the paged cache write: dst_rows holds each batch row's cache row).
void LaunchCopyRowsTo(const float* src, int64_t src_stride, int64_t rows, int64_t cols,
                      const int64_t* dst_rows, float* dst, int64_t dst_stride, cudaStream_t stream);

// dst[c, r] = src[r, c]: src [rows, cols] with row stride src_stride.
void LaunchTranspose(const float* src, int64_t src_stride, int64_t rows, int64_t cols, float* dst,
                     int64_t dst_stride, cudaStream_t stream);

// g = silu(g) * u elementwise over [rows, cols], as the CPU twin writes it
// (g / (1 + exp(-g)) * u, IEEE division).
void LaunchSiluMul(float* g, int64_t g_stride, const float* u, int64_t u_stride, int64_t rows,
                   int64_t cols, cudaStream_t stream);

}  // namespace moeserve::cuda

#endif  // MOESERVE_KERNELS_CUDA_ELEMENTWISE_H_
