#include "runtime/parallel/expert_placement.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace moeserve {

std::vector<int32_t> LayerPlacement::ExpertsOfRank(int32_t rank) const {
  const auto begin = slot_expert.begin() + static_cast<int64_t>(rank) * slots_per_rank;
  return std::vector<int32_t>(begin, begin + slots_per_rank);
}

absl::StatusOr<LayerPlacement> MakeLayerPlacement(int32_t ranks, int32_t slots_per_rank,
                                                  int32_t num_experts,
                                                  std::vector<int32_t> slot_expert) {
  if (ranks < 1 || slots_per_rank < 1 || num_experts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("a placement needs ranks, slots per rank and "
                     "experts >= 1, got ",
                     ranks, ", ", slots_per_rank, ", ", num_experts));
  }
  if (static_cast<int64_t>(slots_per_rank) * ranks < num_experts) {
    return absl::InvalidArgumentError(absl::StrCat(ranks, " ranks of ", slots_per_rank,
                                                   " slots cannot hold ", num_experts, " experts"));
  }
  if (static_cast<int64_t>(slot_expert.size()) != static_cast<int64_t>(slots_per_rank) * ranks) {
    return absl::InvalidArgumentError(absl::StrCat("the placement lists ", slot_expert.size(),
                                                   " slots; ", ranks, " ranks of ", slots_per_rank,
                                                   " slots make ", slots_per_rank * ranks));
  }
  LayerPlacement p;
  p.ranks = ranks;
  p.slots_per_rank = slots_per_rank;
  p.replicas.resize(static_cast<size_t>(num_experts));
  for (size_t s = 0; s < slot_expert.size(); ++s) {
    const int32_t e = slot_expert[s];
    if (e < 0 || e >= num_experts) {
      return absl::InvalidArgumentError(absl::StrCat(
          "slot ", s, " holds expert ", e, "; the model has experts 0..", num_experts - 1));
    }
    auto& r = p.replicas[static_cast<size_t>(e)];
    const auto slot = static_cast<int32_t>(s);
    if (!r.empty() && r.back() / slots_per_rank == slot / slots_per_rank) {
      return absl::InvalidArgumentError(absl::StrCat("rank ", slot / slots_per_rank,
                                                     " holds expert ", e, " twice (slots ",
                                                     r.back(), " and ", slot, ")"));
    }
    r.push_back(slot);
  }
  for (int32_t e = 0; e < num_experts; ++e) {
    if (p.replicas[static_cast<size_t>(e)].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("expert ", e, " is in no slot"));
    }
  }
  p.slot_expert = std::move(slot_expert);
  return p;
}

LayerPlacement ContiguousPlacement(int32_t ranks, int32_t num_experts) {
  const int32_t per_rank = (num_experts + ranks - 1) / ranks;
  std::vector<int32_t> slots(static_cast<size_t>(per_rank) * static_cast<size_t>(ranks));
  // Slots past the last expert (when ranks do not divide the experts) repeat
  // experts of other ranks, so that every slot holds a real expert.
  for (size_t s = 0; s < slots.size(); ++s) {
    slots[s] = static_cast<int32_t>(s % static_cast<size_t>(num_experts));
  }
  auto p = MakeLayerPlacement(ranks, per_rank, num_experts, std::move(slots));
  return *std::move(p);
}

}  // namespace moeserve
