// Launchers that regroup a routed batch by local expert and combine the
// experts' outputs back, deterministically (no floating-point atomics).
//
// The permuted batch is expert-major: local expert e owns rows
// [offsets[e], offsets[e + 1]), its tokens in ascending (token, slot) order,
// then padding rows (source -1) up to a multiple of 4, so that every group
// is a complete FP8 GEMM operand (quantize.h).
#ifndef MOESERVE_KERNELS_CUDA_MOE_PERMUTE_H_
#define MOESERVE_KERNELS_CUDA_MOE_PERMUTE_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace moeserve::cuda {

// counts[e] = entries of expert_ids[0, n) equal to first_expert + e, for
// e < num_experts (counts is zeroed first).
void LaunchCountExperts(const int32_t* expert_ids, int64_t n, int64_t first_expert,
                        int64_t num_experts, int32_t* counts, cudaStream_t stream);

// Fills rows[offsets[e] ...] with the token (entry / top_k) of each entry of
// expert e in entry order, -1 for the group's padding, and slot_rows[entry]
// with the entry's permuted row (-1 for entries of other experts).
void LaunchFillPermutation(const int32_t* expert_ids, int64_t n, int64_t top_k,
                           int64_t first_expert, int64_t num_experts, const int32_t* offsets,
                           const int32_t* counts, int32_t* rows, int32_t* slot_rows,
                           cudaStream_t stream);

// out[t] += gains[t, j] * y_perm[slot_rows[t, j]] over the token's slots with
// a local expert, in ascending expert id (the CPU twin's order: one
// ScatterAddRows per expert, ascending), without fused multiply-add.
void LaunchCombineExperts(const float* y_perm, int64_t y_stride, const int32_t* slot_rows,
                          const int32_t* expert_ids, const float* gains, int64_t tokens,
                          int64_t top_k, int64_t cols, float* out, int64_t out_stride,
                          cudaStream_t stream);

}  // namespace moeserve::cuda

#endif  // MOESERVE_KERNELS_CUDA_MOE_PERMUTE_H_
