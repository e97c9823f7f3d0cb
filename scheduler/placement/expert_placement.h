// Expert placement policy of the coordinator (EPLB): where each MoE layer's
// routed experts live across the ranks of an expert-parallel group, and how
// balanced a placement is for a load. Pure functions over plain data; the
// workers receive the result in Welcome (worker.proto's ExpertPlacement).
//
// A placement has `ranks` ranks of `slots_per_rank` physical slots; slot s is
// held by rank s / slots_per_rank and computes logical expert slot_expert[s].
// Slots beyond the logical count hold redundant replicas; routing spreads an
// expert's tokens evenly over its replicas.
#ifndef MOESERVE_SCHEDULER_PLACEMENT_EXPERT_PLACEMENT_H_
#define MOESERVE_SCHEDULER_PLACEMENT_EXPERT_PLACEMENT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moeserve::scheduler {

struct Placement {
  int32_t ranks = 1;
  int32_t slots_per_rank = 0;
  int32_t experts = 0;                             // logical experts per layer
  std::map<int32_t, std::vector<int32_t>> layers;  // MoE layer -> slot_expert

  int32_t redundant() const { return ranks * slots_per_rank - experts; }
};

// Slots per rank for `experts` logical experts and `redundant` extra replicas
// in all over `ranks` ranks: ceil((experts + redundant) / ranks).
int32_t SlotsPerRank(int32_t experts, int32_t redundant, int32_t ranks);

// Whether `experts` logical experts and `redundant` replicas fit on `ranks`
// ranks with no rank holding an expert twice: every argument positive
// (redundant >= 0) and SlotsPerRank() at most `experts`. InvalidArgument
// naming the numbers otherwise. DefaultPlacement and PlacementFromTrace
// return a valid placement only for numbers that pass.
absl::Status CheckPlacementShape(int32_t experts, int32_t ranks, int32_t redundant);

// Without a load to go by: rank r holds experts [r * E / ranks, ...) and the
// spare slots replicate experts round robin, never twice on one rank.
Placement DefaultPlacement(const std::vector<int32_t>& moe_layers, int32_t experts, int32_t ranks,
                           int32_t redundant);

// Balanced for `load` (tokens per logical expert of one layer): the experts
// with the most tokens per replica get the spare slots one at a time, then
// replicas are packed onto ranks heaviest first, each to the least loaded
// rank with a free slot that does not hold that expert yet; last, slots of
// the most loaded rank are swapped with lighter ones elsewhere while that
// lowers it. Ignores nodes: see node_placement.h for placements that keep
// routing groups on few nodes.
std::vector<int32_t> BalancedLayerPlacement(const std::vector<double>& load, int32_t ranks,
                                            int32_t slots_per_rank);

// Mean over max of the tokens each rank computes, for `load` on one layer's
// slot_expert (a replicated expert's load split evenly over its replicas).
// 1 is perfect balance; 1 also when there is no load.
double Balancedness(const std::vector<double>& load, const std::vector<int32_t>& slot_expert,
                    int32_t ranks, int32_t slots_per_rank);

// Checks every layer: slots_per_rank * ranks entries, experts in range, all
// placed, none twice on one rank. Errors name the layer and slot.
absl::Status ValidatePlacement(const Placement& placement);

// The placement file:
//   {"ranks": 2, "slots_per_rank": 5, "experts": 8,
//    "layers": {"1": [0, 1, 2, 3, 7, 4, 5, 6, 7, 0], ...}}
absl::StatusOr<Placement> ParsePlacementJson(const std::string& text);
std::string PlacementToJson(const Placement& placement);

// A recorded load trace: {"experts": 8, "layers": {"1": [tokens per expert], ...}}
// (what Admin and `moeserve placement` exchange).
struct LoadTrace {
  int32_t experts = 0;
  std::map<int32_t, std::vector<double>> layers;
};
absl::StatusOr<LoadTrace> ParseLoadTraceJson(const std::string& text);
std::string LoadTraceToJson(const LoadTrace& trace);

// A balanced placement of every layer of the trace.
Placement PlacementFromTrace(const LoadTrace& trace, int32_t ranks, int32_t redundant);

}  // namespace moeserve::scheduler

#endif  // MOESERVE_SCHEDULER_PLACEMENT_EXPERT_PLACEMENT_H_
