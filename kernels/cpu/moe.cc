// The MoE block's fixed-capacity ops on the CPU (kernels/ops.h): dispatch
// layout, grouped experts, combine and reduce. They reproduce, row for row,
// the float arithmetic of routing each expert's rows through one GatedFfn and
// summing each token's outputs in ascending expert order, so placements,
// replicas and micro-batching never change a result.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_ops_impl.h"
#include "kernels/moe_contracts.h"

namespace moeserve::cpu {

void CpuOps::MoeDispatchLayout(ConstMatView x, std::span<const int32_t> expert_ids, int64_t top_k,
                               const MoeSlotTable& table, int32_t rank, int64_t capacity,
                               MatView send, std::span<int32_t> send_counts,
                               std::span<int32_t> pair_rows, std::span<int64_t> expert_load,
                               std::span<const int32_t> tokens_in_use) {
  RequireView(x, "moe dispatch x");
  RequireView(send, "moe dispatch send");
  const char* violation =
      MoeDispatchLayoutViolation(x, expert_ids.size(), top_k, table, rank, capacity, send,
                                 send_counts.size(), pair_rows.size(), expert_load.size());
  Require(violation == nullptr, violation);
  Require(tokens_in_use.size() <= 1, "moe dispatch: tokens_in_use holds one count");
  const int64_t in_use =
      tokens_in_use.empty() ? x.rows : std::clamp<int64_t>(tokens_in_use[0], 0, x.rows);
  const int64_t slots = table.slots();
  std::fill(send_counts.begin(), send_counts.end(), 0);
  std::fill(pair_rows.begin() + in_use * top_k, pair_rows.end(), -1);
  std::vector<int64_t> turn(static_cast<size_t>(table.num_experts), 0);
  const size_t row_bytes = static_cast<size_t>(x.cols) * sizeof(float);
  for (int64_t p = 0; p < in_use * top_k; ++p) {
    const int32_t e = expert_ids[static_cast<size_t>(p)];
    Require(e >= 0 && e < table.num_experts, "moe dispatch: expert id outside the table");
    const int32_t count = table.replica_counts[e];
    Require(count >= 1 && count <= table.max_replicas, "moe dispatch: bad replica count");
    const int64_t pick = (rank + turn[static_cast<size_t>(e)]++) % count;
    const int32_t slot = table.replica_slots[e * table.max_replicas + pick];
    Require(slot >= 0 && slot < slots, "moe dispatch: replica slot outside the group");
    const int64_t row = slot * capacity + send_counts[static_cast<size_t>(slot)]++;
    pair_rows[static_cast<size_t>(p)] = static_cast<int32_t>(row);
    std::memcpy(send.row(row), x.row(p / top_k), row_bytes);
    ++expert_load[static_cast<size_t>(e)];
  }
}

void CpuOps::GroupedGatedFfn(ConstMatView x, std::span<const int32_t> counts, int64_t sources,
                             int64_t capacity, std::span<const ExpertFfnWeights> experts,
                             MatView out) {
  RequireView(x, "grouped ffn x");
  RequireView(out, "grouped ffn out");
  const char* violation =
      GroupedGatedFfnViolation(x, counts.size(), sources, capacity, experts.size(), out);
  Require(violation == nullptr, violation);
  const auto local = static_cast<int64_t>(experts.size());
  const size_t row_bytes = static_cast<size_t>(x.cols) * sizeof(float);
  std::vector<int32_t> rows;
  for (int64_t s = 0; s < local; ++s) {
    rows.clear();
    for (int64_t r = 0; r < sources; ++r) {
      const int64_t group = r * local + s;
      const int32_t n = counts[static_cast<size_t>(group)];
      Require(n >= 0 && n <= capacity, "grouped ffn: a count exceeds the capacity");
      for (int32_t i = 0; i < n; ++i) rows.push_back(static_cast<int32_t>(group * capacity + i));
    }
    if (rows.empty()) continue;
    const ExpertFfnWeights& w = experts[static_cast<size_t>(s)];
    if (w.gate == nullptr) {
      for (int32_t r : rows) std::memset(out.row(r), 0, row_bytes);
      continue;
    }
    const auto n = static_cast<int64_t>(rows.size());
    Tensor xin = Tensor::Empty(DType::kF32, {n, x.cols});
    Tensor yout = Tensor::Empty(DType::kF32, {n, x.cols});
    GatherRows(x, rows, xin.mat());
    GatedFfn(xin.mat(), *w.gate, *w.up, *w.down, yout.mat());
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(out.row(rows[static_cast<size_t>(i)]), yout.f32() + i * x.cols, row_bytes);
    }
  }
}

void CpuOps::MoeCombineReduce(ConstMatView combined, std::span<const int32_t> pair_rows,
                              std::span<const int32_t> expert_ids, std::span<const float> gains,
                              int64_t top_k, ConstMatView shared, MatView out) {
  RequireView(combined, "moe reduce combined");
  RequireView(out, "moe reduce out");
  const char* violation = MoeCombineReduceViolation(combined, pair_rows.size(), expert_ids.size(),
                                                    gains.size(), top_k, shared, out);
  Require(violation == nullptr, violation);
  const int64_t tokens = out.rows, cols = out.cols;
  std::vector<int64_t> order(static_cast<size_t>(top_k));
  for (int64_t t = 0; t < tokens; ++t) {
    float* o = out.row(t);
    if (shared.rows > 0) {
      std::memcpy(o, shared.row(t), static_cast<size_t>(cols) * sizeof(float));
    } else {
      std::fill(o, o + cols, 0.0f);
    }
    for (int64_t j = 0; j < top_k; ++j) order[static_cast<size_t>(j)] = t * top_k + j;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return expert_ids[static_cast<size_t>(a)] < expert_ids[static_cast<size_t>(b)];
    });
    for (int64_t p : order) {
      const int32_t row = pair_rows[static_cast<size_t>(p)];
      if (row == -1) continue;  // not dispatched
      Require(row >= 0 && row < combined.rows, "moe reduce: pair row outside combined");
      const float w = gains[static_cast<size_t>(p)];
      const float* src = combined.row(row);
      for (int64_t c = 0; c < cols; ++c) o[c] += w * src[c];
    }
  }
}

}  // namespace moeserve::cpu
