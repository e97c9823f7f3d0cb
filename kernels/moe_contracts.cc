#include "kernels/moe_contracts.h"

namespace moeserve {
namespace {

// Non-negative sizes and, with more than one row, a stride of at least the
// width.
bool WellFormed(ConstMatView v) {
  return v.rows >= 0 && v.cols >= 0 && (v.rows <= 1 || v.stride >= v.cols);
}

}  // namespace

const char* MoeDispatchLayoutViolation(ConstMatView x, size_t expert_ids, int64_t top_k,
                                       const MoeSlotTable& table, int32_t rank, int64_t capacity,
                                       ConstMatView send, size_t send_counts, size_t pair_rows,
                                       size_t expert_load) {
  if (!WellFormed(x) || !WellFormed(send)) return "moe dispatch: a malformed view";
  const int64_t tokens = x.rows, pairs = tokens * top_k, slots = table.slots();
  if (top_k <= 0 || static_cast<int64_t>(expert_ids) != pairs ||
      static_cast<int64_t>(pair_rows) != pairs) {
    return "moe dispatch: expert_ids and pair_rows must hold T * top_k entries";
  }
  if (capacity < tokens || send.rows != slots * capacity || send.cols != x.cols) {
    return "moe dispatch: send must be [slots * capacity, hidden] with capacity >= T";
  }
  if (static_cast<int64_t>(send_counts) != slots ||
      static_cast<int64_t>(expert_load) != table.num_experts) {
    return "moe dispatch: send_counts must hold every slot and expert_load every expert";
  }
  if (rank < 0 || rank >= table.ranks) return "moe dispatch: rank outside the group";
  if (table.num_experts < 0 || table.max_replicas < 1 ||
      (table.num_experts > 0 &&
       (table.replica_slots == nullptr || table.replica_counts == nullptr))) {
    return "moe dispatch: the slot table needs its arrays and max_replicas >= 1";
  }
  if (slots * capacity > INT32_MAX) return "moe dispatch: send rows must fit int32 pair rows";
  return nullptr;
}

const char* GroupedGatedFfnViolation(ConstMatView x, size_t counts, int64_t sources,
                                     int64_t capacity, size_t experts, ConstMatView out) {
  if (!WellFormed(x) || !WellFormed(out)) return "grouped ffn: a malformed view";
  const auto local = static_cast<int64_t>(experts);
  if (sources < 0 || capacity < 0) return "grouped ffn: negative sources or capacity";
  if (static_cast<int64_t>(counts) != sources * local) {
    return "grouped ffn: counts must hold sources * experts entries";
  }
  if (x.rows != sources * local * capacity || out.rows != x.rows || out.cols != x.cols) {
    return "grouped ffn: x and out must be [sources * experts * capacity, hidden]";
  }
  return nullptr;
}

const char* MoeCombineReduceViolation(ConstMatView combined, size_t pair_rows, size_t expert_ids,
                                      size_t gains, int64_t top_k, ConstMatView shared,
                                      ConstMatView out) {
  if (!WellFormed(combined) || !WellFormed(out) || !WellFormed(shared)) {
    return "moe reduce: a malformed view";
  }
  if (top_k <= 0 || static_cast<int64_t>(pair_rows) != out.rows * top_k ||
      expert_ids != pair_rows || gains != pair_rows) {
    return "moe reduce: pair_rows, expert_ids and gains must hold T * top_k entries";
  }
  if (shared.rows != 0 && (shared.rows != out.rows || shared.cols != out.cols)) {
    return "moe reduce: shared must be empty or [T, hidden]";
  }
  if (combined.cols != out.cols) return "moe reduce: combined and out widths differ";
  return nullptr;
}

}  // namespace moeserve
