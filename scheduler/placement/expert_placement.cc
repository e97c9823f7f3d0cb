#include "scheduler/placement/expert_placement.h"

#include <algorithm>
#include <numeric>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "scheduler/placement/slot_packing.h"

namespace moeserve::scheduler {

// Each swap lowers the peak rank strictly, so the search ends on its own; the
// bound only caps its cost on pathological loads.
constexpr int32_t kMaxRefineSwapsPerSlot = 2;

int32_t SlotsPerRank(int32_t experts, int32_t redundant, int32_t ranks) {
  return (experts + redundant + ranks - 1) / ranks;
}

absl::Status CheckPlacementShape(int32_t experts, int32_t ranks, int32_t redundant) {
  if (experts < 1 || ranks < 1 || redundant < 0) {
    return absl::InvalidArgumentError(absl::StrCat("expert placement of ", experts, " experts and ",
                                                   redundant, " redundant on ", ranks,
                                                   " ranks: need experts >= 1, ranks >= 1 "
                                                   "and redundant >= 0"));
  }
  // In 64 bits: experts + redundant + ranks may pass INT32_MAX.
  const int64_t slots = (int64_t{experts} + redundant + ranks - 1) / ranks;
  if (slots > experts) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expert placement of ", experts, " experts and ", redundant, " redundant on ", ranks,
        " ranks: each rank would hold ", slots, " slots, more than the ", experts,
        " distinct experts (a rank holds an expert at most once); use at most ",
        int64_t{experts} * ranks - experts, " redundant experts"));
  }
  return absl::OkStatus();
}

Placement DefaultPlacement(const std::vector<int32_t>& moe_layers, int32_t experts, int32_t ranks,
                           int32_t redundant) {
  Placement p;
  p.ranks = ranks;
  p.experts = experts;
  p.slots_per_rank = SlotsPerRank(experts, redundant, ranks);
  const int32_t base = (experts + ranks - 1) / ranks;  // slots of the contiguous part
  std::vector<int32_t> slots;
  int32_t next_replica = 0;
  for (int32_t r = 0; r < ranks; ++r) {
    std::vector<int32_t> mine;
    for (int32_t i = 0; i < base; ++i) {
      const int32_t e = r * base + i;
      if (e < experts) mine.push_back(e);
    }
    while (static_cast<int32_t>(mine.size()) < p.slots_per_rank) {
      // The next expert round robin that this rank does not hold yet.
      int32_t e = next_replica % experts;
      for (int32_t tries = 0;
           tries < experts && std::find(mine.begin(), mine.end(), e) != mine.end(); ++tries) {
        e = (e + 1) % experts;
      }
      next_replica = e + 1;
      mine.push_back(e);
    }
    slots.insert(slots.end(), mine.begin(), mine.end());
  }
  for (int32_t l : moe_layers) p.layers[l] = slots;
  return p;
}

std::vector<int32_t> BalancedLayerPlacement(const std::vector<double>& load, int32_t ranks,
                                            int32_t slots_per_rank) {
  const auto experts = static_cast<int32_t>(load.size());
  std::vector<int32_t> all(static_cast<size_t>(experts));
  std::iota(all.begin(), all.end(), 0);
  const std::vector<int32_t> replicas = ReplicaCounts(load, all, ranks * slots_per_rank, ranks);
  std::vector<double> per_replica(load.size());
  for (size_t e = 0; e < load.size(); ++e) per_replica[e] = load[e] / replicas[e];
  std::vector<RankSlots> held(static_cast<size_t>(ranks));
  PackReplicas(all, replicas, per_replica, slots_per_rank, 0, ranks, &held);
  RefineBySwaps(per_replica, slots_per_rank, 0, ranks,
                kMaxRefineSwapsPerSlot * ranks * slots_per_rank, &held);
  return SlotExpert(held);
}

double Balancedness(const std::vector<double>& load, const std::vector<int32_t>& slot_expert,
                    int32_t ranks, int32_t slots_per_rank) {
  std::vector<int32_t> replicas(load.size(), 0);
  for (int32_t e : slot_expert) {
    if (e >= 0 && static_cast<size_t>(e) < load.size()) ++replicas[static_cast<size_t>(e)];
  }
  std::vector<double> per_rank(static_cast<size_t>(ranks), 0.0);
  for (size_t s = 0; s < slot_expert.size(); ++s) {
    const auto e = static_cast<size_t>(slot_expert[s]);
    if (e >= load.size()) continue;
    per_rank[s / static_cast<size_t>(slots_per_rank)] += load[e] / replicas[e];
  }
  const double max = *std::max_element(per_rank.begin(), per_rank.end());
  if (max <= 0) return 1.0;
  const double mean = std::accumulate(per_rank.begin(), per_rank.end(), 0.0) / ranks;
  return mean / max;
}

absl::Status ValidatePlacement(const Placement& p) {
  if (p.ranks < 1 || p.slots_per_rank < 1 || p.experts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("a placement needs ranks, slots_per_rank and experts >= 1, got ", p.ranks,
                     ", ", p.slots_per_rank, ", ", p.experts));
  }
  const int64_t slots = static_cast<int64_t>(p.ranks) * p.slots_per_rank;
  if (slots < p.experts) {
    return absl::InvalidArgumentError(absl::StrCat(p.ranks, " ranks of ", p.slots_per_rank,
                                                   " slots cannot hold ", p.experts, " experts"));
  }
  for (const auto& [layer, slot_expert] : p.layers) {
    if (static_cast<int64_t>(slot_expert.size()) != slots) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": ", slot_expert.size(),
                                                     " slots listed, ", slots, " expected"));
    }
    std::vector<bool> placed(static_cast<size_t>(p.experts), false);
    for (size_t s = 0; s < slot_expert.size(); ++s) {
      const int32_t e = slot_expert[s];
      if (e < 0 || e >= p.experts) {
        return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " slot ", s, ": expert ", e,
                                                       " is outside [0, ", p.experts, ")"));
      }
      placed[static_cast<size_t>(e)] = true;
      const size_t first = s - s % static_cast<size_t>(p.slots_per_rank);
      for (size_t t = first; t < s; ++t) {
        if (slot_expert[t] == e) {
          return absl::InvalidArgumentError(
              absl::StrCat("layer ", layer, ": rank ", s / static_cast<size_t>(p.slots_per_rank),
                           " holds expert ", e, " twice (slots ", t, " and ", s, ")"));
        }
      }
    }
    for (int32_t e = 0; e < p.experts; ++e) {
      if (!placed[static_cast<size_t>(e)]) {
        return absl::InvalidArgumentError(
            absl::StrCat("layer ", layer, ": expert ", e, " is in no slot"));
      }
    }
  }
  return absl::OkStatus();
}

namespace {

template <typename T>
absl::StatusOr<std::map<int32_t, std::vector<T>>> ParseLayers(const nlohmann::json& j,
                                                              const char* what) {
  std::map<int32_t, std::vector<T>> layers;
  if (!j.contains("layers") || !j["layers"].is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(what,
                                                   ": \"layers\" must be an object of "
                                                   "layer index to a list"));
  }
  for (const auto& [key, value] : j["layers"].items()) {
    int32_t layer = -1;
    try {
      size_t used = 0;
      layer = std::stoi(key, &used);
      if (used != key.size()) layer = -1;
    } catch (const std::exception&) {
      layer = -1;
    }
    if (layer < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": layer key \"", key, "\" is not a layer index"));
    }
    if (!value.is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": layer ", key, " is not a list"));
    }
    std::vector<T> v;
    for (const auto& x : value) {
      if (!x.is_number() || (std::is_integral_v<T> && !x.is_number_integer())) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": layer ", key, " holds a value that is not a number"));
      }
      v.push_back(x.template get<T>());
    }
    layers[layer] = std::move(v);
  }
  return layers;
}

absl::StatusOr<int32_t> PositiveInt(const nlohmann::json& j, const char* key, const char* what) {
  if (!j.contains(key) || !j[key].is_number_integer() || j[key].get<int64_t>() < 1 ||
      j[key].get<int64_t>() > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": \"", key, "\" must be a positive integer"));
  }
  return j[key].get<int32_t>();
}

}  // namespace

absl::StatusOr<Placement> ParsePlacementJson(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("the expert placement is not a JSON object");
  }
  Placement p;
  auto ranks = PositiveInt(j, "ranks", "expert placement");
  if (!ranks.ok()) return ranks.status();
  auto slots = PositiveInt(j, "slots_per_rank", "expert placement");
  if (!slots.ok()) return slots.status();
  auto experts = PositiveInt(j, "experts", "expert placement");
  if (!experts.ok()) return experts.status();
  p.ranks = *ranks;
  p.slots_per_rank = *slots;
  p.experts = *experts;
  auto layers = ParseLayers<int32_t>(j, "expert placement");
  if (!layers.ok()) return layers.status();
  p.layers = *std::move(layers);
  if (absl::Status s = ValidatePlacement(p); !s.ok()) return s;
  return p;
}

std::string PlacementToJson(const Placement& p) {
  nlohmann::json j;
  j["ranks"] = p.ranks;
  j["slots_per_rank"] = p.slots_per_rank;
  j["experts"] = p.experts;
  j["layers"] = nlohmann::json::object();
  for (const auto& [layer, slots] : p.layers) j["layers"][std::to_string(layer)] = slots;
  return j.dump();
}

absl::StatusOr<LoadTrace> ParseLoadTraceJson(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("the expert load trace is not a JSON object");
  }
  LoadTrace t;
  auto experts = PositiveInt(j, "experts", "expert load trace");
  if (!experts.ok()) return experts.status();
  t.experts = *experts;
  auto layers = ParseLayers<double>(j, "expert load trace");
  if (!layers.ok()) return layers.status();
  for (const auto& [layer, load] : *layers) {
    if (static_cast<int32_t>(load.size()) != t.experts) {
      return absl::InvalidArgumentError(absl::StrCat("expert load trace: layer ", layer, " has ",
                                                     load.size(), " counts for ", t.experts,
                                                     " experts"));
    }
    for (double v : load) {
      if (!(v >= 0)) {
        return absl::InvalidArgumentError(
            absl::StrCat("expert load trace: layer ", layer, " has a negative count"));
      }
    }
  }
  t.layers = *std::move(layers);
  return t;
}

std::string LoadTraceToJson(const LoadTrace& t) {
  nlohmann::json j;
  j["experts"] = t.experts;
  j["layers"] = nlohmann::json::object();
  for (const auto& [layer, load] : t.layers) j["layers"][std::to_string(layer)] = load;
  return j.dump();
}

Placement PlacementFromTrace(const LoadTrace& trace, int32_t ranks, int32_t redundant) {
  Placement p;
  p.ranks = ranks;
  p.experts = trace.experts;
  p.slots_per_rank = SlotsPerRank(trace.experts, redundant, ranks);
  for (const auto& [layer, load] : trace.layers) {
    p.layers[layer] = BalancedLayerPlacement(load, ranks, p.slots_per_rank);
  }
  return p;
}

}  // namespace moeserve::scheduler
