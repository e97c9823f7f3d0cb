// The shape contracts of the MoE block's fixed-capacity ops (kernels/ops.h),
// written once for every op set. Each function returns the first contract the
// call breaks, as a message naming the op and the argument, or nullptr; an op
// set aborts with that message (a caller's bug, never outside input). What only
// the data can break (an expert id, a count) each op set checks where it reads
// the data.
#ifndef MOESERVE_KERNELS_MOE_CONTRACTS_H_
#define MOESERVE_KERNELS_MOE_CONTRACTS_H_

#include <cstddef>
#include <cstdint>

#include "kernels/ops.h"

namespace moeserve {

const char* MoeDispatchLayoutViolation(ConstMatView x, size_t expert_ids, int64_t top_k,
                                       const MoeSlotTable& table, int32_t rank, int64_t capacity,
                                       ConstMatView send, size_t send_counts, size_t pair_rows,
                                       size_t expert_load);

const char* GroupedGatedFfnViolation(ConstMatView x, size_t counts, int64_t sources,
                                     int64_t capacity, size_t experts, ConstMatView out);

const char* MoeCombineReduceViolation(ConstMatView combined, size_t pair_rows, size_t expert_ids,
                                      size_t gains, int64_t top_k, ConstMatView shared,
                                      ConstMatView out);

}  // namespace moeserve

#endif  // MOESERVE_KERNELS_MOE_CONTRACTS_H_
