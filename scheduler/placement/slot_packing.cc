#include "scheduler/placement/slot_packing.h"

#include <algorithm>
#include <cstddef>

namespace moeserve::scheduler {

namespace {

bool Holds(const RankSlots& r, int32_t expert) {
  return std::find(r.experts.begin(), r.experts.end(), expert) != r.experts.end();
}

}  // namespace

std::vector<int32_t> ReplicaCounts(const std::vector<double>& load,
                                   const std::vector<int32_t>& members, int32_t slots,
                                   int32_t max_replicas) {
  std::vector<int32_t> counts(members.size(), 1);
  for (int32_t spare = slots - static_cast<int32_t>(members.size()); spare > 0; --spare) {
    int32_t best = -1;
    double best_per_replica = -1;
    for (size_t i = 0; i < members.size(); ++i) {
      if (counts[i] >= max_replicas) continue;
      const double per_replica = load[static_cast<size_t>(members[i])] / counts[i];
      if (per_replica > best_per_replica) {
        best = static_cast<int32_t>(i);
        best_per_replica = per_replica;
      }
    }
    if (best < 0) break;
    ++counts[static_cast<size_t>(best)];
  }
  return counts;
}

void PackReplicas(const std::vector<int32_t>& members, const std::vector<int32_t>& replicas,
                  const std::vector<double>& per_replica, int32_t slots_per_rank,
                  int32_t first_rank, int32_t count, std::vector<RankSlots>* ranks) {
  std::vector<int32_t> items;  // one expert per replica
  for (size_t i = 0; i < members.size(); ++i) {
    for (int32_t k = 0; k < replicas[i]; ++k) items.push_back(members[i]);
  }
  std::stable_sort(items.begin(), items.end(), [&](int32_t a, int32_t b) {
    return per_replica[static_cast<size_t>(a)] > per_replica[static_cast<size_t>(b)];
  });
  auto rank = [&](int32_t r) -> RankSlots& { return (*ranks)[static_cast<size_t>(r)]; };
  const int32_t end = first_rank + count;
  for (int32_t e : items) {
    int32_t pick = -1;
    for (int32_t r = first_rank; r < end; ++r) {
      const RankSlots& h = rank(r);
      if (static_cast<int32_t>(h.experts.size()) >= slots_per_rank || Holds(h, e)) continue;
      if (pick < 0 || h.load < rank(pick).load ||
          (h.load == rank(pick).load && h.experts.size() < rank(pick).experts.size())) {
        pick = r;
      }
    }
    if (pick < 0) {
      // Only ranks that hold this expert have room: take any, fixed below.
      for (int32_t r = first_rank; r < end && pick < 0; ++r) {
        if (static_cast<int32_t>(rank(r).experts.size()) < slots_per_rank) pick = r;
      }
    }
    if (pick < 0) continue;  // no room at all: the caller broke its promise
    rank(pick).experts.push_back(e);
    rank(pick).load += per_replica[static_cast<size_t>(e)];
  }
  FixRepeats(per_replica, first_rank, count, ranks);
}

void FixRepeats(const std::vector<double>& per_replica, int32_t first_rank, int32_t count,
                std::vector<RankSlots>* ranks) {
  auto rank = [&](int32_t r) -> RankSlots& { return (*ranks)[static_cast<size_t>(r)]; };
  const int32_t end = first_rank + count;
  // Swap a repeated copy with a slot of another rank that holds neither.
  for (int32_t r = first_rank; r < end; ++r) {
    auto& h = rank(r).experts;
    for (size_t i = 0; i < h.size(); ++i) {
      if (std::find(h.begin(), h.begin() + static_cast<std::ptrdiff_t>(i), h[i]) ==
          h.begin() + static_cast<std::ptrdiff_t>(i)) {
        continue;  // first copy on this rank
      }
      bool fixed = false;
      for (int32_t o = first_rank; o < end && !fixed; ++o) {
        if (o == r || Holds(rank(o), h[i])) continue;
        auto& g = rank(o).experts;
        for (size_t j = 0; j < g.size() && !fixed; ++j) {
          if (Holds(rank(r), g[j])) continue;
          const double moved =
              per_replica[static_cast<size_t>(h[i])] - per_replica[static_cast<size_t>(g[j])];
          rank(r).load -= moved;
          rank(o).load += moved;
          std::swap(h[i], g[j]);
          fixed = true;
        }
      }
    }
  }
}

void RefineBySwaps(const std::vector<double>& per_replica, int32_t slots_per_rank,
                   int32_t first_rank, int32_t count, int32_t max_moves,
                   std::vector<RankSlots>* ranks, double good_enough) {
  if (count < 2) return;
  const size_t experts = per_replica.size();
  // held[(r - first_rank) * experts + e]: rank r holds expert e.
  std::vector<char> held(static_cast<size_t>(count) * experts, 0);
  auto held_at = [&](int32_t r, int32_t e) -> char& {
    return held[static_cast<size_t>(r - first_rank) * experts + static_cast<size_t>(e)];
  };
  for (int32_t r = first_rank; r < first_rank + count; ++r) {
    for (int32_t e : (*ranks)[static_cast<size_t>(r)].experts) held_at(r, e) = 1;
  }
  auto w = [&](int32_t e) { return per_replica[static_cast<size_t>(e)]; };
  for (int32_t move = 0; move < max_moves; ++move) {
    int32_t m = first_rank;
    for (int32_t r = first_rank; r < first_rank + count; ++r) {
      if ((*ranks)[static_cast<size_t>(r)].load > (*ranks)[static_cast<size_t>(m)].load) m = r;
    }
    RankSlots& top = (*ranks)[static_cast<size_t>(m)];
    if (top.load <= good_enough) return;
    // A swap must lower the peak by more than rounding noise to count.
    const double tolerance = 1e-12 * std::max(top.load, 1.0);
    double best_peak = top.load - tolerance;
    int32_t best_o = -1;
    size_t best_i = 0, best_j = 0;
    for (size_t i = 0; i < top.experts.size(); ++i) {
      const int32_t a = top.experts[i];
      const double la = w(a);
      for (int32_t o = first_rank; o < first_rank + count; ++o) {
        if (o == m || held_at(o, a)) continue;
        const RankSlots& other = (*ranks)[static_cast<size_t>(o)];
        if (other.load >= best_peak) continue;  // gaining any load puts it over the peak
        for (size_t j = 0; j < other.experts.size(); ++j) {
          const int32_t b = other.experts[j];
          const double lb = w(b);
          if (lb >= la || held_at(m, b)) continue;
          const double peak = std::max(top.load - la + lb, other.load - lb + la);
          if (peak < best_peak) {
            best_peak = peak;
            best_o = o;
            best_i = i;
            best_j = j;
          }
        }
      }
    }
    if (best_o < 0) return;
    RankSlots& other = (*ranks)[static_cast<size_t>(best_o)];
    const int32_t a = top.experts[best_i];
    const int32_t b = other.experts[best_j];
    held_at(m, a) = 0;
    held_at(best_o, a) = 1;
    held_at(best_o, b) = 0;
    held_at(m, b) = 1;
    top.experts[best_i] = b;
    other.experts[best_j] = a;
    top.load += w(b) - w(a);
    other.load += w(a) - w(b);
  }
}

std::vector<int32_t> SlotExpert(const std::vector<RankSlots>& ranks) {
  std::vector<int32_t> slots;
  for (const RankSlots& r : ranks) slots.insert(slots.end(), r.experts.begin(), r.experts.end());
  return slots;
}

}  // namespace moeserve::scheduler
