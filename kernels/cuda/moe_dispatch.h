// Launchers of the MoE block's fixed-capacity ops (kernels/ops.h:
// MoeDispatchLayout, GroupedGatedFfn, MoeCombineReduce): every count they
// read or write stays in device memory, nothing is read back to the host, so
// a MoE layer queues the same work whatever the routing and can be captured
// in a CUDA graph. Pointers are device addresses, strides in elements.
//
// Determinism: no floating-point atomics and no atomics that decide an
// order. The dispatch layout is the CPU twin's integer logic in closed form:
// the k-th pair of expert e (pairs in order) goes to replica
// j = (rank + k) % count, and is row k / count of that replica's slot,
// because the earlier pairs of e that chose j are exactly those k' < k with
// k' = k (mod count). This assumes what MoeSlotTable promises: a slot holds
// one expert, i.e. no slot appears twice in replica_slots.
#ifndef MOESERVE_KERNELS_CUDA_MOE_DISPATCH_H_
#define MOESERVE_KERNELS_CUDA_MOE_DISPATCH_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace moeserve::cuda {

struct DispatchTable {
  const int32_t* replica_slots = nullptr;   // [num_experts * max_replicas]
  const int32_t* replica_counts = nullptr;  // [num_experts]
  int64_t num_experts = 0;
  int64_t max_replicas = 0;
  int64_t slots = 0;
};

// Zeroes send_counts[0, slots), then, one warp per expert scanning the pairs
// in order: pair_rows[p] = slot * capacity + row for every pair of a valid
// expert (-1 when the table or the capacity is broken: kErrBadSlotTable /
// kErrRowOutsideMatrix), send_counts of the expert's replica slots, and
// expert_load[e] += its pairs. Then copies x[p / top_k] to send[pair_rows[p]]
// for every pair (an expert id outside the table raises
// kErrExpertOutsideRange and copies nothing). With `tokens_in_use` (device,
// one count), only the pairs of the first *tokens_in_use tokens take part;
// the others get pair_rows -1.
void LaunchMoeDispatchLayout(const float* x, int64_t x_stride, int64_t cols,
                             const int32_t* expert_ids, int64_t pairs, int64_t top_k,
                             const DispatchTable& table, int32_t rank, int64_t capacity,
                             float* send, int64_t send_stride, int32_t* send_counts,
                             int32_t* pair_rows, int64_t* expert_load,
                             const int32_t* tokens_in_use, uint32_t* error_word,
                             cudaStream_t stream);

// Groups of a received buffer: group g = r * local + s (source rank r,
// local slot s) holds counts[g] rows from row g * capacity.
struct ReceivedGroups {
  const int32_t* counts = nullptr;  // [sources * local], each in [0, capacity]
  int64_t sources = 0;
  int64_t local = 0;
  int64_t capacity = 0;
};

// xe [sources * capacity, cols] = local slot s's rows in source order:
// xe row r * capacity + i = x row (r * local + s) * capacity + i for
// i < counts[r * local + s], and zero for the rows past the count (so that
// the fixed-size products see finite numbers). A count outside
// [0, capacity] raises kErrRowOutsideMatrix and is clamped.
void LaunchGatherSlotRows(const float* x, int64_t x_stride, int64_t cols,
                          const ReceivedGroups& groups, int64_t slot, float* xe, int64_t xe_stride,
                          uint32_t* error_word, cudaStream_t stream);

// The inverse for the rows inside the counts: out row (r * local + s) *
// capacity + i = ye row r * capacity + i (zero when ye is null: an expert
// that is not loaded). Rows past the counts are not written.
void LaunchScatterSlotRows(const float* ye, int64_t ye_stride, int64_t cols,
                           const ReceivedGroups& groups, int64_t slot, float* out,
                           int64_t out_stride, cudaStream_t stream);

// out[t] = shared[t] (zero when shared is null), then out[t] += gains[p] *
// combined[pair_rows[p]] for the token's pairs in ascending expert id (ties
// in pair order), one pair at a time with __fmul_rn / __fadd_rn: the CPU
// twin's float sum to the bit. A pair row of -1 (not dispatched) adds
// nothing; one outside [0, combined_rows) raises kErrRowOutsideMatrix and is
// skipped. In place (shared == out) allowed.
void LaunchMoeCombineReduce(const float* combined, int64_t combined_stride, int64_t combined_rows,
                            const int32_t* pair_rows, const int32_t* expert_ids, const float* gains,
                            int64_t tokens, int64_t top_k, int64_t cols, const float* shared,
                            int64_t shared_stride, float* out, int64_t out_stride,
                            uint32_t* error_word, cudaStream_t stream);

}  // namespace moeserve::cuda

#endif  // MOESERVE_KERNELS_CUDA_MOE_DISPATCH_H_
