// The MoE block's fixed-capacity ops of the CUDA op set (kernels/ops.h):
// dispatch layout, grouped experts, combine and reduce, with every count in
// device memory (moe_dispatch.h has the kernels and why they match the CPU
// twin, kernels/cpu/moe.cc).
#include <algorithm>

#include "kernels/cuda/contracts.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/moe_dispatch.h"
#include "kernels/moe_contracts.h"

namespace moeserve::cuda {

void CudaOps::MoeDispatchLayout(ConstMatView x, std::span<const int32_t> expert_ids, int64_t top_k,
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
  const int64_t pairs = x.rows * top_k, slots = table.slots();
  const DispatchTable device_table{table.replica_slots, table.replica_counts, table.num_experts,
                                   table.max_replicas, slots};
  LaunchMoeDispatchLayout(x.data, x.stride, x.cols, expert_ids.data(), pairs, top_k, device_table,
                          rank, capacity, send.data, send.stride, send_counts.data(),
                          pair_rows.data(), expert_load.data(),
                          tokens_in_use.empty() ? nullptr : tokens_in_use.data(), error_word_.get(),
                          stream_);
}

void CudaOps::GroupedGatedFfn(ConstMatView x, std::span<const int32_t> counts, int64_t sources,
                              int64_t capacity, std::span<const ExpertFfnWeights> experts,
                              MatView out) {
  RequireView(x, "grouped ffn x");
  RequireView(out, "grouped ffn out");
  const char* violation =
      GroupedGatedFfnViolation(x, counts.size(), sources, capacity, experts.size(), out);
  Require(violation == nullptr, violation);
  const auto local = static_cast<int64_t>(experts.size());
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
  const char* violation = MoeCombineReduceViolation(combined, pair_rows.size(), expert_ids.size(),
                                                    gains.size(), top_k, shared, out);
  Require(violation == nullptr, violation);
  const int64_t tokens = out.rows, cols = out.cols;
  LaunchMoeCombineReduce(combined.data, combined.stride, combined.rows, pair_rows.data(),
                         expert_ids.data(), gains.data(), tokens, top_k, cols,
                         shared.rows > 0 ? shared.data : nullptr, shared.stride, out.data,
                         out.stride, error_word_.get(), stream_);
}

}  // namespace moeserve::cuda
