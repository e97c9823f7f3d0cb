// The MoE block's fixed-capacity ops of the CUDA op set (kernels/ops.h):
// dispatch layout, grouped experts, combine and reduce, with every count in
// device memory (moe_dispatch.h has the kernels and why they match the CPU
// twin, kernels/cpu/moe.cc).
#include <algorithm>

#include "kernels/cuda/contracts.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/moe_dispatch.h"

namespace moeserve::cuda {

void CudaOps::MoeDispatchLayout(ConstMatView x, std::span<const int32_t> expert_ids, int64_t top_k,
                                const MoeSlotTable& table, int32_t rank, int64_t capacity,
                                MatView send, std::span<int32_t> send_counts,
                                std::span<int32_t> pair_rows, std::span<int64_t> expert_load) {
  RequireView(x, "moe dispatch x");
  RequireView(send, "moe dispatch send");
  const int64_t tokens = x.rows, pairs = tokens * top_k, slots = table.slots();
  Require(top_k > 0 && static_cast<int64_t>(expert_ids.size()) == pairs &&
              static_cast<int64_t>(pair_rows.size()) == pairs,
          "moe dispatch: expert_ids and pair_rows must hold T * top_k entries");
  Require(capacity >= tokens && send.rows == slots * capacity && send.cols == x.cols,
          "moe dispatch: send must be [slots * capacity, hidden] with capacity >= T");
  Require(static_cast<int64_t>(send_counts.size()) == slots &&
              static_cast<int64_t>(expert_load.size()) == table.num_experts,
          "moe dispatch: send_counts must hold every slot and expert_load every expert");
  Require(rank >= 0 && rank < table.ranks, "moe dispatch: rank outside the group");
  Require(table.num_experts >= 0 && table.max_replicas >= 1 &&
              (table.num_experts == 0 ||
               (table.replica_slots != nullptr && table.replica_counts != nullptr)),
          "moe dispatch: the slot table needs its arrays and max_replicas >= 1");
  Require(slots * capacity <= INT32_MAX, "moe dispatch: send rows must fit int32 pair rows");
  const DispatchTable device_table{table.replica_slots, table.replica_counts, table.num_experts,
                                   table.max_replicas, slots};
  LaunchMoeDispatchLayout(x.data, x.stride, x.cols, expert_ids.data(), pairs, top_k, device_table,
                          rank, capacity, send.data, send.stride, send_counts.data(),
                          pair_rows.data(), expert_load.data(), error_word_.get(), stream_);
}

void CudaOps::GroupedGatedFfn(ConstMatView x, std::span<const int32_t> counts, int64_t sources,
                              int64_t capacity, std::span<const ExpertFfnWeights> experts,
                              MatView out) {
  RequireView(x, "grouped ffn x");
  RequireView(out, "grouped ffn out");
  const auto local = static_cast<int64_t>(experts.size());
  Require(sources >= 0 && capacity >= 0, "grouped ffn: negative sources or capacity");
  Require(static_cast<int64_t>(counts.size()) == sources * local,
          "grouped ffn: counts must hold sources * experts entries");
  Require(x.rows == sources * local * capacity && out.rows == x.rows && out.cols == x.cols,
          "grouped ffn: x and out must be [sources * experts * capacity, hidden]");
  const int64_t rows = sources * capacity, hidden = x.cols;
  if (rows == 0 || local == 0) return;
  // One expert's gathered rows and outputs, reused expert after expert in
  // stream order (GatedFfn's own temporaries live in scratch_).
  ScratchLayout layout;
  const size_t xe_off = layout.Add<float>(rows * hidden);
  const size_t ye_off = layout.Add<float>(rows * hidden);
  void* base = moe_rows_.Reserve(layout.bytes());
  const MatView xe{At<float>(base, xe_off), rows, hidden, hidden};
  const MatView ye{At<float>(base, ye_off), rows, hidden, hidden};
  const ReceivedGroups groups{counts.data(), sources, local, capacity};
  for (int64_t s = 0; s < local; ++s) {
    const ExpertFfnWeights& w = experts[static_cast<size_t>(s)];
    if (w.gate == nullptr) {  // not loaded: its rows come out zero, as on the CPU
      LaunchScatterSlotRows(nullptr, 0, hidden, groups, s, out.data, out.stride, stream_);
      continue;
    }
    Require(w.up != nullptr && w.down != nullptr,
            "grouped ffn: an expert with gate needs up, down");
    LaunchGatherSlotRows(x.data, x.stride, hidden, groups, s, xe.data, xe.stride, error_word_.get(),
                         stream_);
    GatedFfn(xe, *w.gate, *w.up, *w.down, ye);
    LaunchScatterSlotRows(ye.data, ye.stride, hidden, groups, s, out.data, out.stride, stream_);
  }
}

void CudaOps::MoeCombineReduce(ConstMatView combined, std::span<const int32_t> pair_rows,
                               std::span<const int32_t> expert_ids, std::span<const float> gains,
                               int64_t top_k, ConstMatView shared, MatView out) {
  RequireView(combined, "moe reduce combined");
  RequireView(out, "moe reduce out");
  RequireView(shared, "moe reduce shared");
  const int64_t tokens = out.rows, cols = out.cols;
  Require(top_k > 0 && static_cast<int64_t>(pair_rows.size()) == tokens * top_k &&
              expert_ids.size() == pair_rows.size() && gains.size() == pair_rows.size(),
          "moe reduce: pair_rows, expert_ids and gains must hold T * top_k entries");
  Require(shared.rows == 0 || (shared.rows == tokens && shared.cols == cols),
          "moe reduce: shared must be empty or [T, hidden]");
  Require(combined.cols == cols, "moe reduce: combined and out widths differ");
  LaunchMoeCombineReduce(combined.data, combined.stride, combined.rows, pair_rows.data(),
                         expert_ids.data(), gains.data(), tokens, top_k, cols,
                         shared.rows > 0 ? shared.data : nullptr, shared.stride, out.data,
                         out.stride, error_word_.get(), stream_);
}

}  // namespace moeserve::cuda
