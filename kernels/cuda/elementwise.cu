// Row-wise and elementwise kernels of the CUDA op set. One block per row
// (looping when there are more rows than a grid holds); threads stride over
// the row's columns, so reads and writes are coalesced.
#include <cuda_runtime.h>

#include <cmath>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/kernel_util.cuh"

namespace moeserve::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void EmbeddingKernel(const void* table, bool bf16, int64_t vocab, int64_t hidden,
                                const int32_t* ids, int64_t n, float* out, int64_t out_stride,
                                uint32_t* error_word) {
  for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
    const int32_t id = ids[t];
    float* o = out + t * out_stride;
    if (id < 0 || id >= vocab) {
      if (threadIdx.x == 0) RaiseError(error_word, kErrTokenOutsideVocab);
      for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) o[c] = NAN;
      continue;
    }
    if (bf16) {
      const uint16_t* row = static_cast<const uint16_t*>(table) + id * hidden;
      for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) {
        o[c] = __uint_as_float(static_cast<uint32_t>(row[c]) << 16);
      }
    } else {
      const float* row = static_cast<const float*>(table) + id * hidden;
      for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) o[c] = row[c];
    }
  }
}

__global__ void AddKernel(const float* x, int64_t xs, float* y, int64_t ys, int64_t rows,
                          int64_t cols) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) y[r * ys + c] += x[r * xs + c];
  }
}

__global__ void LogSoftmaxKernel(const float* x, int64_t xs, float* out, int64_t os, int64_t rows,
                                 int64_t cols) {
  __shared__ float fscratch[kThreads / kWarp];
  __shared__ double dscratch[kThreads / kWarp];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* in = x + r * xs;
    float m = -INFINITY;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) m = fmaxf(m, in[c]);
    m = BlockMax(m, fscratch);
    double sum = 0.0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      sum += exp(static_cast<double>(in[c]) - static_cast<double>(m));
    }
    sum = BlockSum(sum, dscratch);
    const double shift = static_cast<double>(m) + log(sum);
    float* o = out + r * os;  // may equal `in`: every read of the row is behind the barriers
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      o[c] = static_cast<float>(static_cast<double>(in[c]) - shift);
    }
    __syncthreads();
  }
}

__global__ void GatherRowsKernel(const float* x, int64_t xs, int64_t x_rows, int64_t cols,
                                 const int32_t* rows, int64_t n, float* out, int64_t os,
                                 bool allow_padding, uint32_t* error_word) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const int32_t src = rows[i];
    float* o = out + i * os;
    if (src < 0 || src >= x_rows) {
      const bool padding = allow_padding && src == -1;
      if (!padding && threadIdx.x == 0) RaiseError(error_word, kErrRowOutsideMatrix);
      for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) o[c] = padding ? 0.0f : NAN;
      continue;
    }
    const float* in = x + src * xs;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) o[c] = in[c];
  }
}

// One thread per column walks the rows in order: parallel over columns,
// sequential (hence deterministic and duplicate-safe) over rows.
__global__ void ScatterAddRowsKernel(const float* x, int64_t xs, int64_t n, int64_t cols,
                                     const int32_t* rows, const float* weights, float* y,
                                     int64_t ys, int64_t y_rows, uint32_t* error_word) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t dst = rows[i];
    if (dst < 0 || dst >= y_rows) {
      if (c == 0) RaiseError(error_word, kErrRowOutsideMatrix);
      continue;
    }
    float* d = y + dst * ys + c;
    *d = __fadd_rn(*d, __fmul_rn(weights[i], x[i * xs + c]));
  }
}

__global__ void CopyRowsToKernel(const float* src, int64_t ss, int64_t rows, int64_t cols,
                                 const int64_t* dst_rows, float* dst, int64_t ds) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t to = dst_rows[r];
    if (to < 0) continue;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dst[to * ds + c] = src[r * ss + c];
  }
}

constexpr int kTile = 32;

__global__ void TransposeKernel(const float* src, int64_t ss, int64_t rows, int64_t cols,
                                float* dst, int64_t ds) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kTile;
  for (int i = threadIdx.y; i < kTile; i += blockDim.y) {
    const int64_t r = r0 + i, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[i][threadIdx.x] = src[r * ss + c];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < kTile; i += blockDim.y) {
    const int64_t c = c0 + i, r = r0 + threadIdx.x;
    if (r < rows && c < cols) dst[c * ds + r] = tile[threadIdx.x][i];
  }
}

__global__ void SiluMulKernel(float* g, int64_t gs, const float* u, int64_t us, int64_t rows,
                              int64_t cols) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const float a = g[r * gs + c];
      g[r * gs + c] = __fmul_rn(__fdiv_rn(a, __fadd_rn(1.0f, expf(-a))), u[r * us + c]);
    }
  }
}

unsigned RowGrid(int64_t rows) { return GridFor(rows, 1); }

}  // namespace

void LaunchEmbedding(const void* table, bool table_bf16, int64_t vocab, int64_t hidden,
                     const int32_t* ids, int64_t n, float* out, int64_t out_stride,
                     uint32_t* error_word, cudaStream_t stream) {
  if (n == 0) return;
  EmbeddingKernel<<<RowGrid(n), kThreads, 0, stream>>>(table, table_bf16, vocab, hidden, ids, n,
                                                       out, out_stride, error_word);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

void LaunchAdd(const float* x, int64_t x_stride, float* y, int64_t y_stride, int64_t rows,
               int64_t cols, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  AddKernel<<<RowGrid(rows), kThreads, 0, stream>>>(x, x_stride, y, y_stride, rows, cols);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

void LaunchLogSoftmax(const float* x, int64_t x_stride, float* out, int64_t out_stride,
                      int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  LogSoftmaxKernel<<<RowGrid(rows), kThreads, 0, stream>>>(x, x_stride, out, out_stride, rows,
                                                           cols);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

void LaunchGatherRows(const float* x, int64_t x_stride, int64_t x_rows, int64_t cols,
                      const int32_t* rows, int64_t n, float* out, int64_t out_stride,
                      bool allow_padding, uint32_t* error_word, cudaStream_t stream) {
  if (n == 0 || cols == 0) return;
  GatherRowsKernel<<<RowGrid(n), kThreads, 0, stream>>>(x, x_stride, x_rows, cols, rows, n, out,
                                                        out_stride, allow_padding, error_word);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

void LaunchScatterAddRows(const float* x, int64_t x_stride, int64_t n, int64_t cols,
                          const int32_t* rows, const float* weights, float* y, int64_t y_stride,
                          int64_t y_rows, uint32_t* error_word, cudaStream_t stream) {
  if (n == 0 || cols == 0) return;
  ScatterAddRowsKernel<<<GridFor(cols, 128), 128, 0, stream>>>(x, x_stride, n, cols, rows, weights,
                                                               y, y_stride, y_rows, error_word);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

void LaunchCopyRowsTo(const float* src, int64_t src_stride, int64_t rows, int64_t cols,
                      const int64_t* dst_rows, float* dst, int64_t dst_stride,
                      cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  CopyRowsToKernel<<<RowGrid(rows), kThreads, 0, stream>>>(src, src_stride, rows, cols, dst_rows,
                                                           dst, dst_stride);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

void LaunchTranspose(const float* src, int64_t src_stride, int64_t rows, int64_t cols, float* dst,
                     int64_t dst_stride, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  const dim3 grid(static_cast<unsigned>((cols + kTile - 1) / kTile),
                  static_cast<unsigned>((rows + kTile - 1) / kTile));
  TransposeKernel<<<grid, dim3(kTile, 8), 0, stream>>>(src, src_stride, rows, cols, dst,
                                                       dst_stride);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

void LaunchSiluMul(float* g, int64_t g_stride, const float* u, int64_t u_stride, int64_t rows,
                   int64_t cols, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  SiluMulKernel<<<RowGrid(rows), kThreads, 0, stream>>>(g, g_stride, u, u_stride, rows, cols);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace moeserve::cuda
