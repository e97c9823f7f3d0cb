#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernel_util.cuh"
#include "kernels/cuda/moe_dispatch.h"

namespace moeserve::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / kWarp;
constexpr int kMaxTopK = 32;

// One warp per expert walks the pairs 32 at a time; a ballot numbers the
// expert's pairs in pair order (k), which fixes replica, slot and row.
__device__ inline int64_t PairsInUse(int64_t pairs, int64_t top_k, const int32_t* tokens_in_use) {
  if (tokens_in_use == nullptr) return pairs;
  const int64_t n = static_cast<int64_t>(max(*tokens_in_use, 0)) * top_k;
  return n < pairs ? n : pairs;
}

__global__ void DispatchLayoutKernel(const int32_t* expert_ids, int64_t all_pairs, int64_t top_k,
                                     const int32_t* tokens_in_use, DispatchTable table,
                                     int32_t rank, int64_t capacity, int32_t* send_counts,
                                     int32_t* pair_rows, int64_t* expert_load,
                                     uint32_t* error_word) {
  const int lane = threadIdx.x % kWarp;
  const int64_t e = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const int64_t pairs = PairsInUse(all_pairs, top_k, tokens_in_use);
  if (e == 0) {  // the pairs left out: not dispatched
    for (int64_t p = pairs + lane; p < all_pairs; p += kWarp) pair_rows[p] = -1;
  }
  if (e >= table.num_experts) return;  // uniform per warp
  const int32_t count = table.replica_counts[e];
  const bool table_ok = count >= 1 && count <= table.max_replicas;
  if (!table_ok && lane == 0) RaiseError(error_word, kErrBadSlotTable);
  const int32_t* replicas = table.replica_slots + e * table.max_replicas;
  int64_t seen = 0;  // pairs of e before this chunk
  for (int64_t base = 0; base < pairs; base += kWarp) {
    const int64_t p = base + lane;
    const bool mine = p < pairs && expert_ids[p] == e;
    const unsigned ballot = __ballot_sync(0xffffffffu, mine);
    if (mine) {
      const int64_t k = seen + __popc(ballot & ((1u << lane) - 1u));
      int32_t row = -1;
      if (table_ok) {
        const int32_t slot = replicas[(rank + k) % count];
        const int64_t pos = k / count;
        if (slot < 0 || slot >= table.slots) {
          RaiseError(error_word, kErrBadSlotTable);
        } else if (pos >= capacity) {
          RaiseError(error_word, kErrRowOutsideMatrix);
        } else {
          row = static_cast<int32_t>(slot * capacity + pos);
        }
      }
      pair_rows[p] = row;
    }
    seen += __popc(ballot);
  }
  if (table_ok) {
    // Replica j took the pairs k = j - rank (mod count): ceil((seen - r0) / count) of them.
    for (int32_t j = lane; j < count; j += kWarp) {
      const int32_t slot = replicas[j];
      if (slot < 0 || slot >= table.slots) continue;  // raised above when used
      const int64_t r0 = ((j - static_cast<int64_t>(rank)) % count + count) % count;
      const int64_t n = seen > r0 ? (seen - 1 - r0) / count + 1 : 0;
      send_counts[slot] = static_cast<int32_t>(n < capacity ? n : capacity);
    }
  }
  if (lane == 0) expert_load[e] += seen;
}

// One block per pair: its token's row into its send row.
__global__ void DispatchCopyKernel(const float* x, int64_t x_stride, int64_t cols,
                                   const int32_t* expert_ids, int64_t num_experts,
                                   const int32_t* pair_rows, int64_t all_pairs, int64_t top_k,
                                   const int32_t* tokens_in_use, float* send,
                                   int64_t send_stride, uint32_t* error_word) {
  const int64_t pairs = PairsInUse(all_pairs, top_k, tokens_in_use);
  for (int64_t p = blockIdx.x; p < pairs; p += gridDim.x) {
    const int32_t e = expert_ids[p];
    if (e < 0 || e >= num_experts) {
      if (threadIdx.x == 0) RaiseError(error_word, kErrExpertOutsideRange);
      continue;
    }
    const int32_t row = pair_rows[p];
    if (row < 0) continue;  // raised by the layout kernel
    const float* src = x + (p / top_k) * x_stride;
    float* dst = send + static_cast<int64_t>(row) * send_stride;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = src[c];
  }
}

__device__ inline int32_t ClampedCount(const int32_t* counts, int64_t group, int64_t capacity,
                                       uint32_t* error_word) {
  const int32_t n = counts[group];
  if (n < 0 || n > capacity) {
    RaiseError(error_word, kErrRowOutsideMatrix);
    return n < 0 ? 0 : static_cast<int32_t>(capacity);
  }
  return n;
}

// One block per row of the slot's rows (sources * capacity).
__global__ void GatherSlotRowsKernel(const float* x, int64_t x_stride, int64_t cols,
                                     ReceivedGroups groups, int64_t slot, float* xe,
                                     int64_t xe_stride, uint32_t* error_word) {
  const int64_t rows = groups.sources * groups.capacity;
  for (int64_t q = blockIdx.x; q < rows; q += gridDim.x) {
    const int64_t r = q / groups.capacity, i = q % groups.capacity;
    const int64_t group = r * groups.local + slot;
    const bool inside = i < ClampedCount(groups.counts, group, groups.capacity,
                                         threadIdx.x == 0 ? error_word : nullptr);
    float* dst = xe + q * xe_stride;
    const float* src = x + (group * groups.capacity + i) * x_stride;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = inside ? src[c] : 0.0f;
  }
}

__global__ void ScatterSlotRowsKernel(const float* ye, int64_t ye_stride, int64_t cols,
                                      ReceivedGroups groups, int64_t slot, float* out,
                                      int64_t out_stride) {
  const int64_t rows = groups.sources * groups.capacity;
  for (int64_t q = blockIdx.x; q < rows; q += gridDim.x) {
    const int64_t r = q / groups.capacity, i = q % groups.capacity;
    const int64_t group = r * groups.local + slot;
    if (i >= ClampedCount(groups.counts, group, groups.capacity, nullptr)) continue;
    float* dst = out + (group * groups.capacity + i) * out_stride;
    if (ye == nullptr) {
      for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = 0.0f;
    } else {
      const float* src = ye + q * ye_stride;
      for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = src[c];
    }
  }
}

// One block per token: thread 0 orders the token's pairs by expert id
// (insertion sort: stable), then each thread sums its columns in that order.
__global__ void CombineReduceKernel(const float* combined, int64_t combined_stride,
                                    int64_t combined_rows, const int32_t* pair_rows,
                                    const int32_t* expert_ids, const float* gains, int64_t tokens,
                                    int64_t top_k, int64_t cols, const float* shared,
                                    int64_t shared_stride, float* out, int64_t out_stride,
                                    uint32_t* error_word) {
  __shared__ int32_t order[kMaxTopK];
  __shared__ int32_t rows[kMaxTopK];
  __shared__ float weights[kMaxTopK];
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    const int64_t first = t * top_k;
    if (threadIdx.x == 0) {
      for (int32_t j = 0; j < top_k; ++j) {
        int32_t pos = j;
        while (pos > 0 && expert_ids[first + order[pos - 1]] > expert_ids[first + j]) {
          order[pos] = order[pos - 1];
          --pos;
        }
        order[pos] = j;
      }
      for (int32_t j = 0; j < top_k; ++j) {
        const int64_t p = first + order[j];
        int32_t row = pair_rows[p];
        if (row < -1 || row >= combined_rows) {  // -1: not dispatched
          RaiseError(error_word, kErrRowOutsideMatrix);
          row = -1;
        }
        rows[j] = row;
        weights[j] = gains[p];
      }
    }
    __syncthreads();
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      float o = shared != nullptr ? shared[t * shared_stride + c] : 0.0f;
      for (int32_t j = 0; j < top_k; ++j) {
        if (rows[j] < 0) continue;
        o = __fadd_rn(o, __fmul_rn(weights[j], combined[rows[j] * combined_stride + c]));
      }
      out[t * out_stride + c] = o;
    }
    __syncthreads();  // before thread 0 rewrites the shared arrays
  }
}

}  // namespace

void LaunchMoeDispatchLayout(const float* x, int64_t x_stride, int64_t cols,
                             const int32_t* expert_ids, int64_t pairs, int64_t top_k,
                             const DispatchTable& table, int32_t rank, int64_t capacity,
                             float* send, int64_t send_stride, int32_t* send_counts,
                             int32_t* pair_rows, int64_t* expert_load,
                             const int32_t* tokens_in_use, uint32_t* error_word,
                             cudaStream_t stream) {
  if (table.slots > 0) {
    MOESERVE_CUDA_CHECK(cudaMemsetAsync(
        send_counts, 0, static_cast<size_t>(table.slots) * sizeof(int32_t), stream));
  }
  if (table.num_experts > 0) {
    DispatchLayoutKernel<<<GridFor(table.num_experts, kWarpsPerBlock), kThreads, 0, stream>>>(
        expert_ids, pairs, top_k, tokens_in_use, table, rank, capacity, send_counts, pair_rows,
        expert_load, error_word);
    MOESERVE_CUDA_CHECK_LAUNCH();
  }
  if (pairs == 0) return;
  DispatchCopyKernel<<<GridFor(pairs, 1), kThreads, 0, stream>>>(
      x, x_stride, cols, expert_ids, table.num_experts, pair_rows, pairs, top_k, tokens_in_use,
      send, send_stride, error_word);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

void LaunchGatherSlotRows(const float* x, int64_t x_stride, int64_t cols,
                          const ReceivedGroups& groups, int64_t slot, float* xe, int64_t xe_stride,
                          uint32_t* error_word, cudaStream_t stream) {
  const int64_t rows = groups.sources * groups.capacity;
  if (rows == 0 || cols == 0) return;
  GatherSlotRowsKernel<<<GridFor(rows, 1), kThreads, 0, stream>>>(x, x_stride, cols, groups, slot,
                                                                  xe, xe_stride, error_word);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

void LaunchScatterSlotRows(const float* ye, int64_t ye_stride, int64_t cols,
                           const ReceivedGroups& groups, int64_t slot, float* out,
                           int64_t out_stride, cudaStream_t stream) {
  const int64_t rows = groups.sources * groups.capacity;
  if (rows == 0 || cols == 0) return;
  ScatterSlotRowsKernel<<<GridFor(rows, 1), kThreads, 0, stream>>>(ye, ye_stride, cols, groups,
                                                                   slot, out, out_stride);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

void LaunchMoeCombineReduce(const float* combined, int64_t combined_stride, int64_t combined_rows,
                            const int32_t* pair_rows, const int32_t* expert_ids, const float* gains,
                            int64_t tokens, int64_t top_k, int64_t cols, const float* shared,
                            int64_t shared_stride, float* out, int64_t out_stride,
                            uint32_t* error_word, cudaStream_t stream) {
  if (tokens == 0 || cols == 0) return;
  Require(top_k >= 1 && top_k <= kMaxTopK, "moe reduce: top_k must be in [1, 32]");
  CombineReduceKernel<<<GridFor(tokens, 1), kThreads, 0, stream>>>(
      combined, combined_stride, combined_rows, pair_rows, expert_ids, gains, tokens, top_k, cols,
      shared, shared_stride, out, out_stride, error_word);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace moeserve::cuda
