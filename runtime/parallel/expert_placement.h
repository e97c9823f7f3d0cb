// Where the routed experts of each MoE layer live across an expert-parallel
// group: `ranks` ranks of `slots_per_rank` physical slots each; rank r holds
// slots [r * slots_per_rank, (r + 1) * slots_per_rank). A placement maps every
// slot to a logical expert; slots beyond the logical count hold redundant
// replicas of (hot) experts, and routing spreads a logical expert's tokens
// over its replicas. The coordinator decides placements
// (scheduler/placement/); workers receive them in Welcome.
#ifndef MOESERVE_RUNTIME_PARALLEL_EXPERT_PLACEMENT_H_
#define MOESERVE_RUNTIME_PARALLEL_EXPERT_PLACEMENT_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace moeserve {

struct LayerPlacement {
  int32_t ranks = 1;
  int32_t slots_per_rank = 0;
  std::vector<int32_t> slot_expert;            // physical slot -> logical expert
  std::vector<std::vector<int32_t>> replicas;  // logical expert -> its slots, ascending

  int32_t RankOfSlot(int32_t slot) const { return slot / slots_per_rank; }
  int32_t LocalSlot(int32_t slot) const { return slot % slots_per_rank; }
  // Logical experts held by `rank`, one per local slot.
  std::vector<int32_t> ExpertsOfRank(int32_t rank) const;
};

// Checks that `slot_expert` has ranks * slots_per_rank entries, each a
// logical expert in [0, num_experts), every logical expert placed at least
// once and no rank holding the same expert twice; fills `replicas`.
absl::StatusOr<LayerPlacement> MakeLayerPlacement(int32_t ranks, int32_t slots_per_rank,
                                                  int32_t num_experts,
                                                  std::vector<int32_t> slot_expert);

// Every expert once, rank r holding the contiguous range of experts
// [r * E / ranks, ...): the placement of the single-process engine (ranks 1)
// and of a group without a placement.
LayerPlacement ContiguousPlacement(int32_t ranks, int32_t num_experts);

// One LayerPlacement per model layer; dense layers have an empty one.
struct ExpertPlacement {
  std::vector<LayerPlacement> layers;
  const LayerPlacement& layer(int64_t l) const { return layers[static_cast<size_t>(l)]; }
};

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_PARALLEL_EXPERT_PLACEMENT_H_
