// Node-aware expert placement. DeepSeek-V3 routes each token to experts of
// at most topk_group of its n_group routing groups (contiguous runs of
// E / n_group experts) so that a token reaches few nodes; a placement that
// spreads every group over every node throws that away. Given how many ranks
// share a node (ranks r .. r + ranks_per_node - 1 form node r / ranks_per_node),
// the modes here keep groups on few nodes:
//
//   flat          ignores nodes (BalancedLayerPlacement): the best balance,
//                 every group on every node.
//   node-limited  each routing group's experts, replicas included, on one
//                 node, as DeepSeek's hierarchical EPLB: groups are packed to
//                 nodes by load, then each node replicates and packs its own
//                 experts over its ranks.
//   relaxed       starts from node-limited; where that misses a balancedness
//                 target, extra replicas of the hottest experts may go to other
//                 nodes, preferring nodes that already hold their group. Every
//                 expert keeps a copy on its group's node, so a router that
//                 prefers local replicas can still serve a token on one node.
//
// Pure functions over plain data; the result is an ordinary placement
// (slot -> expert per layer), so the placement file does not change.
#ifndef MOESERVE_SCHEDULER_PLACEMENT_NODE_PLACEMENT_H_
#define MOESERVE_SCHEDULER_PLACEMENT_NODE_PLACEMENT_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "scheduler/placement/expert_placement.h"

namespace moeserve::scheduler {

enum class PlacementMode { kFlat, kNodeLimited, kRelaxed };

// "flat", "node-limited", "relaxed"; an error lists them.
absl::StatusOr<PlacementMode> ParsePlacementMode(std::string_view name);
const char* PlacementModeName(PlacementMode mode);

struct NodePlacementOptions {
  PlacementMode mode = PlacementMode::kFlat;
  int32_t ranks_per_node = 0;  // 0: all ranks on one node
  int32_t routing_groups = 1;  // the model's n_group
  // Relaxed mode spills replicas off their group's node only until every
  // rank's load is within this fraction of balance (mean over max); 1 spills
  // wherever that helps at all.
  double relaxed_target_balancedness = 0.95;
};

// Checks that `options` fit `experts` logical experts on `ranks` ranks of
// `slots_per_rank` slots: nodes divide ranks, groups divide experts and (for
// node-limited and relaxed) spread evenly over nodes, and a node has room for
// its groups. Errors name the values and the flag-level words
// (ranks per node, routing groups).
absl::Status ValidateNodePlacement(const NodePlacementOptions& options, int32_t experts,
                                   int32_t ranks, int32_t slots_per_rank);

// One layer's slot_expert for `load` (tokens per logical expert) under
// `options`, which must have passed ValidateNodePlacement.
std::vector<int32_t> NodeAwareLayerPlacement(const std::vector<double>& load, int32_t ranks,
                                             int32_t slots_per_rank,
                                             const NodePlacementOptions& options);

// Every layer of the trace under `options`; an invalid configuration is an
// InvalidArgument error from ValidateNodePlacement.
absl::StatusOr<Placement> PlacementFromTrace(const LoadTrace& trace, int32_t ranks,
                                             int32_t redundant,
                                             const NodePlacementOptions& options);

// Mean over routing groups of the number of nodes holding at least one of the
// group's experts (replicas included) in slot_expert: 1 when every group sits
// on one node, up to the node count when groups span all of them.
double NodesPerGroup(const std::vector<int32_t>& slot_expert, int32_t experts,
                     int32_t routing_groups, int32_t slots_per_rank, int32_t ranks_per_node);

}  // namespace moeserve::scheduler

#endif  // MOESERVE_SCHEDULER_PLACEMENT_NODE_PLACEMENT_H_
