#include <cuda_runtime.h>

#include <algorithm>
#include <cub/block/block_scan.cuh>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernel_util.cuh"
#include "kernels/cuda/moe_permute.h"

namespace moeserve::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxTopK = 32;

__global__ void CountExpertsKernel(const int32_t* ids, int64_t n, int64_t first, int64_t experts,
                                   int32_t* counts) {
  extern __shared__ int32_t local[];  // [experts]
  for (int64_t e = threadIdx.x; e < experts; e += blockDim.x) local[e] = 0;
  __syncthreads();
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = static_cast<int64_t>(ids[i]) - first;
    if (e >= 0 && e < experts) atomicAdd(&local[e], 1);
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < experts; e += blockDim.x) {
    if (local[e] != 0) atomicAdd(&counts[e], local[e]);
  }
}

// One block per local expert scans all entries in order: a block-wide
// exclusive sum of "is mine" gives each entry its rank within the expert.
__global__ void FillPermutationKernel(const int32_t* ids, int64_t n, int64_t top_k, int64_t first,
                                      const int32_t* offsets, const int32_t* counts, int32_t* rows,
                                      int32_t* slot_rows) {
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage temp;
  const int64_t e = blockIdx.x;
  const int32_t begin = offsets[e];
  int running = 0;
  for (int64_t base = 0; base < n; base += kThreads) {
    const int64_t i = base + threadIdx.x;
    const int mine = (i < n && ids[i] == first + e) ? 1 : 0;
    int rank = 0, total = 0;
    Scan(temp).ExclusiveSum(mine, rank, total);
    if (mine) {
      const int32_t pos = begin + running + rank;
      rows[pos] = static_cast<int32_t>(i / top_k);
      slot_rows[i] = pos;
    }
    running += total;
    __syncthreads();  // `temp` is reused by the next chunk
  }
  for (int32_t p = begin + counts[e] + threadIdx.x; p < offsets[e + 1]; p += kThreads) rows[p] = -1;
}

__global__ void CombineExpertsKernel(const float* y, int64_t ys, const int32_t* slot_rows,
                                     const int32_t* ids, const float* gains, int64_t tokens,
                                     int64_t top_k, int64_t cols, float* out, int64_t os) {
  __shared__ int32_t order[kMaxTopK];  // the token's slots by ascending expert id
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    if (threadIdx.x == 0) {
      const int32_t* tid = ids + t * top_k;
      for (int64_t j = 0; j < top_k; ++j) {
        int64_t rank = 0;  // slots with a smaller expert id (ids of a token are distinct)
        for (int64_t q = 0; q < top_k; ++q)
          rank += (tid[q] < tid[j] || (tid[q] == tid[j] && q < j));
        order[rank] = static_cast<int32_t>(j);
      }
    }
    __syncthreads();
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      float acc = out[t * os + c];
      for (int64_t k = 0; k < top_k; ++k) {
        const int64_t j = t * top_k + order[k];
        const int32_t row = slot_rows[j];
        if (row >= 0) acc = __fadd_rn(acc, __fmul_rn(gains[j], y[row * ys + c]));
      }
      out[t * os + c] = acc;
    }
    __syncthreads();  // `order` is rewritten for the next token
  }
}

}  // namespace

void LaunchCountExperts(const int32_t* expert_ids, int64_t n, int64_t first_expert,
                        int64_t num_experts, int32_t* counts, cudaStream_t stream) {
  MOESERVE_CUDA_CHECK(
      cudaMemsetAsync(counts, 0, static_cast<size_t>(num_experts) * sizeof(int32_t), stream));
  if (n == 0 || num_experts == 0) return;
  const size_t shared = static_cast<size_t>(num_experts) * sizeof(int32_t);
  Require(shared <= (48 << 10), "moe permute: too many local experts");
  CountExpertsKernel<<<std::min<unsigned>(GridFor(n, kThreads), 1024), kThreads, shared, stream>>>(
      expert_ids, n, first_expert, num_experts, counts);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

void LaunchFillPermutation(const int32_t* expert_ids, int64_t n, int64_t top_k,
                           int64_t first_expert, int64_t num_experts, const int32_t* offsets,
                           const int32_t* counts, int32_t* rows, int32_t* slot_rows,
                           cudaStream_t stream) {
  MOESERVE_CUDA_CHECK(cudaMemsetAsync(slot_rows, 0xff, static_cast<size_t>(n) * sizeof(int32_t),
                                      stream));  // -1 everywhere
  if (n == 0 || num_experts == 0) return;
  FillPermutationKernel<<<static_cast<unsigned>(num_experts), kThreads, 0, stream>>>(
      expert_ids, n, top_k, first_expert, offsets, counts, rows, slot_rows);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

void LaunchCombineExperts(const float* y_perm, int64_t y_stride, const int32_t* slot_rows,
                          const int32_t* expert_ids, const float* gains, int64_t tokens,
                          int64_t top_k, int64_t cols, float* out, int64_t out_stride,
                          cudaStream_t stream) {
  if (tokens == 0 || cols == 0) return;
  Require(top_k <= kMaxTopK, "moe combine: top_k must be <= 32");
  CombineExpertsKernel<<<GridFor(tokens, 1), kThreads, 0, stream>>>(
      y_perm, y_stride, slot_rows, expert_ids, gains, tokens, top_k, cols, out, out_stride);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace moeserve::cuda
