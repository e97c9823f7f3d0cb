#include "scheduler/placement/node_placement.h"

#include <algorithm>
#include <cstddef>
#include <limits>
#include <numeric>
#include <string>

#include "absl/strings/str_cat.h"
#include "scheduler/placement/slot_packing.h"

namespace moeserve::scheduler {

namespace {

// Swap searches end on their own (each step lowers a peak strictly); these
// bounds only cap their cost on pathological loads.
constexpr int32_t kMaxRefineSwapsPerSlot = 2;
constexpr int32_t kMaxGroupSwapsPerGroup = 2;
// Relaxed mode tries spill caps for these balancedness targets above the
// operator's, loosest first: a tighter cap spills more but makes up for
// packing's granularity when the loosest one falls short.
constexpr double kRelaxedTargetSteps[] = {0, 0.03};

struct Layout {
  int32_t ranks;
  int32_t slots_per_rank;
  int32_t ranks_per_node;
  int32_t nodes;
  int32_t groups;
  int32_t group_size;  // experts per routing group
};

Layout MakeLayout(int32_t experts, int32_t ranks, int32_t slots_per_rank,
                  const NodePlacementOptions& o) {
  const int32_t per_node = o.ranks_per_node > 0 ? o.ranks_per_node : ranks;
  const int32_t groups = std::max(o.routing_groups, 1);
  return {ranks, slots_per_rank, per_node, ranks / per_node, groups, experts / groups};
}

// Groups to nodes, groups / nodes each, by load: heaviest first to the least
// loaded node with room, then swaps between the heaviest node and another
// while that lowers it. Returns the node of each group.
std::vector<int32_t> GroupsToNodes(const std::vector<double>& group_load, int32_t nodes) {
  const auto groups = static_cast<int32_t>(group_load.size());
  const int32_t per_node = groups / nodes;
  std::vector<int32_t> order(static_cast<size_t>(groups));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return group_load[static_cast<size_t>(a)] > group_load[static_cast<size_t>(b)];
  });
  std::vector<int32_t> node_of(static_cast<size_t>(groups), 0);
  std::vector<double> node_load(static_cast<size_t>(nodes), 0);
  std::vector<int32_t> node_count(static_cast<size_t>(nodes), 0);
  for (int32_t g : order) {
    int32_t pick = -1;
    for (int32_t n = 0; n < nodes; ++n) {
      if (node_count[static_cast<size_t>(n)] >= per_node) continue;
      if (pick < 0 || node_load[static_cast<size_t>(n)] < node_load[static_cast<size_t>(pick)]) {
        pick = n;
      }
    }
    node_of[static_cast<size_t>(g)] = pick;
    node_load[static_cast<size_t>(pick)] += group_load[static_cast<size_t>(g)];
    ++node_count[static_cast<size_t>(pick)];
  }
  for (int32_t step = 0; step < kMaxGroupSwapsPerGroup * groups; ++step) {
    const auto top = static_cast<int32_t>(std::max_element(node_load.begin(), node_load.end()) -
                                          node_load.begin());
    const double peak = node_load[static_cast<size_t>(top)];
    double best = peak - 1e-12 * std::max(peak, 1.0);
    int32_t best_a = -1, best_b = -1;
    for (int32_t a = 0; a < groups; ++a) {
      if (node_of[static_cast<size_t>(a)] != top) continue;
      for (int32_t b = 0; b < groups; ++b) {
        const int32_t other = node_of[static_cast<size_t>(b)];
        const double d = group_load[static_cast<size_t>(a)] - group_load[static_cast<size_t>(b)];
        if (other == top || d <= 0) continue;
        const double worst = std::max(peak - d, node_load[static_cast<size_t>(other)] + d);
        if (worst < best) {
          best = worst;
          best_a = a;
          best_b = b;
        }
      }
    }
    if (best_a < 0) break;
    const int32_t other = node_of[static_cast<size_t>(best_b)];
    const double d =
        group_load[static_cast<size_t>(best_a)] - group_load[static_cast<size_t>(best_b)];
    node_load[static_cast<size_t>(top)] -= d;
    node_load[static_cast<size_t>(other)] += d;
    std::swap(node_of[static_cast<size_t>(best_a)], node_of[static_cast<size_t>(best_b)]);
  }
  return node_of;
}

// One node's ranks holding only the experts of its groups.
struct NodeSlots {
  std::vector<RankSlots> ranks;  // the node's ranks, first to last
  double peak = 0;               // tokens of its most loaded rank
};

NodeSlots PackNode(const std::vector<double>& load, const Layout& l,
                   const std::vector<int32_t>& node_groups) {
  std::vector<int32_t> members;
  for (int32_t g : node_groups) {
    for (int32_t i = 0; i < l.group_size; ++i) members.push_back(g * l.group_size + i);
  }
  const std::vector<int32_t> replicas =
      ReplicaCounts(load, members, l.ranks_per_node * l.slots_per_rank, l.ranks_per_node);
  std::vector<double> per_replica(load.size(), 0);
  for (size_t i = 0; i < members.size(); ++i) {
    per_replica[static_cast<size_t>(members[i])] =
        load[static_cast<size_t>(members[i])] / replicas[i];
  }
  NodeSlots node;
  node.ranks.resize(static_cast<size_t>(l.ranks_per_node));
  PackReplicas(members, replicas, per_replica, l.slots_per_rank, 0, l.ranks_per_node, &node.ranks);
  RefineBySwaps(per_replica, l.slots_per_rank, 0, l.ranks_per_node,
                kMaxRefineSwapsPerSlot * l.ranks_per_node * l.slots_per_rank, &node.ranks);
  for (const RankSlots& r : node.ranks) node.peak = std::max(node.peak, r.load);
  return node;
}

struct NodeLimited {
  std::vector<int32_t> slot_expert;
  std::vector<int32_t> node_of_group;
};

// Groups to nodes by load, each node packed on its own; then, while swapping
// a group of the node with the most loaded rank for a lighter group of
// another node lowers that rank (granularity can make group sums mislead),
// do it.
NodeLimited NodeLimitedLayer(const std::vector<double>& load, const Layout& l) {
  std::vector<double> group_load(static_cast<size_t>(l.groups), 0);
  for (size_t e = 0; e < load.size(); ++e) {
    group_load[e / static_cast<size_t>(l.group_size)] += load[e];
  }
  NodeLimited out;
  out.node_of_group = GroupsToNodes(group_load, l.nodes);
  std::vector<std::vector<int32_t>> node_groups(static_cast<size_t>(l.nodes));
  for (int32_t g = 0; g < l.groups; ++g) {
    node_groups[static_cast<size_t>(out.node_of_group[static_cast<size_t>(g)])].push_back(g);
  }
  std::vector<NodeSlots> nodes;
  for (const auto& groups : node_groups) nodes.push_back(PackNode(load, l, groups));
  for (int32_t step = 0; step < kMaxGroupSwapsPerGroup * l.groups && l.nodes > 1; ++step) {
    size_t top = 0;
    for (size_t n = 1; n < nodes.size(); ++n) {
      if (nodes[n].peak > nodes[top].peak) top = n;
    }
    double best = nodes[top].peak - 1e-12 * std::max(nodes[top].peak, 1.0);
    NodeSlots best_top, best_other;
    size_t best_n = 0, best_i = 0, best_j = 0;
    for (size_t n = 0; n < nodes.size(); ++n) {
      if (n == top || nodes[n].peak >= best) continue;
      for (size_t i = 0; i < node_groups[top].size(); ++i) {
        for (size_t j = 0; j < node_groups[n].size(); ++j) {
          const int32_t a = node_groups[top][i], b = node_groups[n][j];
          if (group_load[static_cast<size_t>(a)] <= group_load[static_cast<size_t>(b)]) continue;
          std::vector<int32_t> top_groups = node_groups[top], other_groups = node_groups[n];
          top_groups[i] = b;
          other_groups[j] = a;
          NodeSlots t = PackNode(load, l, top_groups);
          NodeSlots o = PackNode(load, l, other_groups);
          if (std::max(t.peak, o.peak) < best) {
            best = std::max(t.peak, o.peak);
            best_top = std::move(t);
            best_other = std::move(o);
            best_n = n;
            best_i = i;
            best_j = j;
          }
        }
      }
    }
    if (best_top.ranks.empty()) break;
    std::swap(node_groups[top][best_i], node_groups[best_n][best_j]);
    nodes[top] = std::move(best_top);
    nodes[best_n] = std::move(best_other);
  }
  for (int32_t n = 0; n < l.nodes; ++n) {
    for (int32_t g : node_groups[static_cast<size_t>(n)]) {
      out.node_of_group[static_cast<size_t>(g)] = n;
    }
    const std::vector<int32_t> slots = SlotExpert(nodes[static_cast<size_t>(n)].ranks);
    out.slot_expert.insert(out.slot_expert.end(), slots.begin(), slots.end());
  }
  return out;
}

// Replica counts for spilling: every expert's first copy stays on its
// group's node, so a node whose first copies alone exceed its share under
// `rank_cap` cannot shed enough. Spare slots first go to such nodes' experts,
// each to the one whose next replica takes the most off its node, until the
// first copies fit in kFirstCopyShare of the node's cap; the rest go to the
// most tokens per replica anywhere.
constexpr double kFirstCopyShare = 0.9;

std::vector<int32_t> SpillReplicaCounts(const std::vector<double>& load, const Layout& l,
                                        const std::vector<int32_t>& node_of_group,
                                        double rank_cap) {
  const auto experts = static_cast<int32_t>(load.size());
  std::vector<int32_t> replicas(static_cast<size_t>(experts), 1);
  std::vector<double> first_load(static_cast<size_t>(l.nodes), 0);
  auto home = [&](int32_t e) { return node_of_group[static_cast<size_t>(e / l.group_size)]; };
  for (int32_t e = 0; e < experts; ++e)
    first_load[static_cast<size_t>(home(e))] += load[static_cast<size_t>(e)];
  const double node_cap = kFirstCopyShare * rank_cap * l.ranks_per_node;
  int32_t spare = l.ranks * l.slots_per_rank - experts;
  for (int32_t n = 0; n < l.nodes; ++n) {
    while (spare > 0 && first_load[static_cast<size_t>(n)] > node_cap) {
      int32_t best = -1;
      double best_gain = 0;
      for (int32_t e = 0; e < experts; ++e) {
        const int32_t r = replicas[static_cast<size_t>(e)];
        if (home(e) != n || r >= l.ranks) continue;
        const double gain =
            load[static_cast<size_t>(e)] / r - load[static_cast<size_t>(e)] / (r + 1);
        if (gain > best_gain) {
          best = e;
          best_gain = gain;
        }
      }
      if (best < 0) break;
      ++replicas[static_cast<size_t>(best)];
      first_load[static_cast<size_t>(n)] -= best_gain;
      --spare;
    }
  }
  for (; spare > 0; --spare) {
    int32_t best = -1;
    double best_per_replica = -1;
    for (int32_t e = 0; e < experts; ++e) {
      const int32_t r = replicas[static_cast<size_t>(e)];
      if (r >= l.ranks) continue;
      if (load[static_cast<size_t>(e)] / r > best_per_replica) {
        best = e;
        best_per_replica = load[static_cast<size_t>(e)] / r;
      }
    }
    if (best < 0) break;
    ++replicas[static_cast<size_t>(best)];
  }
  return replicas;
}

// Every expert's first copy on its group's node; further replicas, heaviest
// first, on the least loaded rank of that node while it stays under
// `rank_cap` tokens, else on another node: one that already holds the group
// if it has a rank under the cap, then any rank under the cap, then the least
// loaded rank anywhere. Slots are reserved so that every first copy fits at
// home. Then each node's ranks are refined among themselves.
std::vector<int32_t> SpillLayer(const std::vector<double>& load, const Layout& l,
                                const std::vector<int32_t>& node_of_group, double rank_cap,
                                bool across_nodes) {
  const auto experts = static_cast<int32_t>(load.size());
  std::vector<int32_t> all(static_cast<size_t>(experts));
  std::iota(all.begin(), all.end(), 0);
  const std::vector<int32_t> replicas = SpillReplicaCounts(load, l, node_of_group, rank_cap);
  std::vector<double> per_replica(load.size());
  for (size_t e = 0; e < load.size(); ++e) per_replica[e] = load[e] / replicas[e];
  struct Copy {
    int32_t expert;
    bool first;
  };
  std::vector<Copy> copies;
  for (int32_t e = 0; e < experts; ++e) {
    for (int32_t k = 0; k < replicas[static_cast<size_t>(e)]; ++k) copies.push_back({e, k == 0});
  }
  std::stable_sort(copies.begin(), copies.end(), [&](const Copy& a, const Copy& b) {
    return per_replica[static_cast<size_t>(a.expert)] > per_replica[static_cast<size_t>(b.expert)];
  });
  auto home = [&](int32_t e) { return node_of_group[static_cast<size_t>(e / l.group_size)]; };
  std::vector<int32_t> node_free(static_cast<size_t>(l.nodes), l.ranks_per_node * l.slots_per_rank);
  std::vector<int32_t> firsts_left(static_cast<size_t>(l.nodes), 0);
  // Tokens on each node so far, and of first copies still to come home.
  std::vector<double> node_load(static_cast<size_t>(l.nodes), 0);
  std::vector<double> firsts_load_left(static_cast<size_t>(l.nodes), 0);
  for (int32_t e = 0; e < experts; ++e) {
    ++firsts_left[static_cast<size_t>(home(e))];
    firsts_load_left[static_cast<size_t>(home(e))] += per_replica[static_cast<size_t>(e)];
  }
  const double node_cap = rank_cap * l.ranks_per_node;
  // holds_group[g * nodes + n]: node n holds some expert of group g.
  std::vector<char> holds_group(static_cast<size_t>(l.groups * l.nodes), 0);
  for (int32_t g = 0; g < l.groups; ++g) {
    holds_group[static_cast<size_t>(g * l.nodes + node_of_group[static_cast<size_t>(g)])] = 1;
  }
  std::vector<RankSlots> ranks(static_cast<size_t>(l.ranks));
  auto can_take = [&](int32_t r, int32_t e) {
    const RankSlots& h = ranks[static_cast<size_t>(r)];
    return static_cast<int32_t>(h.experts.size()) < l.slots_per_rank &&
           std::find(h.experts.begin(), h.experts.end(), e) == h.experts.end();
  };
  constexpr double kNoCap = std::numeric_limits<double>::infinity();
  // The least loaded rank of ranks [first, first + count) that can take e,
  // under `cap` tokens after taking it; -1 if none.
  auto least = [&](int32_t first, int32_t count, int32_t e, double cap) {
    int32_t pick = -1;
    const double w = per_replica[static_cast<size_t>(e)];
    // Under a cap, the node must also keep room for its first copies to come.
    const auto n = static_cast<size_t>(first / l.ranks_per_node);
    if (cap < kNoCap && node_load[n] + firsts_load_left[n] + w > node_cap) return -1;
    for (int32_t r = first; r < first + count; ++r) {
      const double load_r = ranks[static_cast<size_t>(r)].load;
      if (!can_take(r, e) || load_r + w > cap) continue;
      if (pick < 0 || load_r < ranks[static_cast<size_t>(pick)].load) pick = r;
    }
    return pick;
  };
  for (const Copy& c : copies) {
    const int32_t h = home(c.expert);
    const int32_t g = c.expert / l.group_size;
    auto spare = [&](int32_t n) {  // slots a copy other than a first may take
      return node_free[static_cast<size_t>(n)] > firsts_left[static_cast<size_t>(n)];
    };
    int32_t pick = -1;
    if (c.first) {
      pick = least(h * l.ranks_per_node, l.ranks_per_node, c.expert, kNoCap);
    } else {
      if (spare(h)) pick = least(h * l.ranks_per_node, l.ranks_per_node, c.expert, rank_cap);
      for (int pass = 0; pass < 3 && pick < 0; ++pass) {
        // pass 0: nodes holding the group under the cap; 1: any under the cap;
        // 2: the least loaded anywhere.
        double best_load = kNoCap;
        for (int32_t n = 0; n < l.nodes; ++n) {
          if (!spare(n) || (pass == 0 && !holds_group[static_cast<size_t>(g * l.nodes + n)])) {
            continue;
          }
          const int32_t r =
              least(n * l.ranks_per_node, l.ranks_per_node, c.expert, pass < 2 ? rank_cap : kNoCap);
          if (r >= 0 && ranks[static_cast<size_t>(r)].load < best_load) {
            best_load = ranks[static_cast<size_t>(r)].load;
            pick = r;
          }
        }
      }
    }
    if (pick < 0) {
      // Every rank with room holds this expert: take one, fixed below.
      for (int32_t r = 0; r < l.ranks && pick < 0; ++r) {
        const int32_t n = r / l.ranks_per_node;
        if (static_cast<int32_t>(ranks[static_cast<size_t>(r)].experts.size()) < l.slots_per_rank &&
            (c.first ? n == h : spare(n))) {
          pick = r;
        }
      }
    }
    const int32_t n = pick / l.ranks_per_node;
    ranks[static_cast<size_t>(pick)].experts.push_back(c.expert);
    ranks[static_cast<size_t>(pick)].load += per_replica[static_cast<size_t>(c.expert)];
    --node_free[static_cast<size_t>(n)];
    node_load[static_cast<size_t>(n)] += per_replica[static_cast<size_t>(c.expert)];
    if (c.first) {
      --firsts_left[static_cast<size_t>(h)];
      firsts_load_left[static_cast<size_t>(h)] -= per_replica[static_cast<size_t>(c.expert)];
    }
    holds_group[static_cast<size_t>(g * l.nodes + n)] = 1;
  }
  FixRepeats(per_replica, 0, l.ranks, &ranks);
  for (int32_t n = 0; n < l.nodes; ++n) {
    RefineBySwaps(per_replica, l.slots_per_rank, n * l.ranks_per_node, l.ranks_per_node,
                  kMaxRefineSwapsPerSlot * l.ranks_per_node * l.slots_per_rank, &ranks);
  }
  if (across_nodes) {
    RefineBySwaps(per_replica, l.slots_per_rank, 0, l.ranks,
                  kMaxRefineSwapsPerSlot * l.ranks * l.slots_per_rank, &ranks, rank_cap);
  }
  return SlotExpert(ranks);
}

std::vector<int32_t> RelaxedLayer(const std::vector<double>& load, const Layout& l, double target) {
  NodeLimited limited = NodeLimitedLayer(load, l);
  const double limited_balance = Balancedness(load, limited.slot_expert, l.ranks, l.slots_per_rank);
  if (limited_balance >= target) return std::move(limited.slot_expert);
  const double mean = std::accumulate(load.begin(), load.end(), 0.0) / l.ranks;
  std::vector<int32_t> best = std::move(limited.slot_expert);
  double best_balance = limited_balance;
  for (double step : kRelaxedTargetSteps) {
    const double aim = std::min(target + step, 1.0);
    std::vector<int32_t> spilled = SpillLayer(load, l, limited.node_of_group, mean / aim, false);
    const double balance = Balancedness(load, spilled, l.ranks, l.slots_per_rank);
    if (balance > best_balance) {
      best = std::move(spilled);
      best_balance = balance;
    }
    if (best_balance >= target) return best;
    if (aim >= 1.0) break;
  }
  // Last, let the slots of the most loaded ranks swap across nodes too, only
  // until the target is met.
  std::vector<int32_t> swapped = SpillLayer(load, l, limited.node_of_group, mean / target, true);
  if (const double b = Balancedness(load, swapped, l.ranks, l.slots_per_rank); b > best_balance) {
    best = std::move(swapped);
    best_balance = b;
  }
  if (best_balance >= target) return best;
  // Still short: the layer needs replicas everywhere, as flat places them.
  std::vector<int32_t> flat = BalancedLayerPlacement(load, l.ranks, l.slots_per_rank);
  if (Balancedness(load, flat, l.ranks, l.slots_per_rank) > best_balance) return flat;
  return best;
}

}  // namespace

absl::StatusOr<PlacementMode> ParsePlacementMode(std::string_view name) {
  if (name == "flat") return PlacementMode::kFlat;
  if (name == "node-limited") return PlacementMode::kNodeLimited;
  if (name == "relaxed") return PlacementMode::kRelaxed;
  return absl::InvalidArgumentError(absl::StrCat("unknown placement mode \"", std::string(name),
                                                 "\": use flat, node-limited or relaxed"));
}

const char* PlacementModeName(PlacementMode mode) {
  switch (mode) {
    case PlacementMode::kFlat:
      return "flat";
    case PlacementMode::kNodeLimited:
      return "node-limited";
    case PlacementMode::kRelaxed:
      return "relaxed";
  }
  return "unknown";
}

absl::Status ValidateNodePlacement(const NodePlacementOptions& o, int32_t experts, int32_t ranks,
                                   int32_t slots_per_rank) {
  if (experts < 1 || ranks < 1 || slots_per_rank < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("a placement needs experts, ranks and slots per "
                     "rank >= 1, got ",
                     experts, ", ", ranks, ", ", slots_per_rank));
  }
  if (static_cast<int64_t>(ranks) * slots_per_rank < experts) {
    return absl::InvalidArgumentError(absl::StrCat(ranks, " ranks of ", slots_per_rank,
                                                   " slots cannot hold ", experts, " experts"));
  }
  if (o.ranks_per_node < 0 || (o.ranks_per_node > 0 && ranks % o.ranks_per_node != 0)) {
    return absl::InvalidArgumentError(absl::StrCat(ranks, " ranks do not split into nodes of ",
                                                   o.ranks_per_node, " ranks per node"));
  }
  if (o.routing_groups < 1 || experts % o.routing_groups != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(experts, " experts do not split into ", o.routing_groups, " routing groups"));
  }
  if (o.mode == PlacementMode::kFlat) return absl::OkStatus();
  const Layout l = MakeLayout(experts, ranks, slots_per_rank, o);
  if (l.groups % l.nodes != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        PlacementModeName(o.mode), " placement keeps each routing group on one node, but ",
        l.groups, " routing groups do not spread evenly over ", l.nodes, " nodes (", ranks,
        " ranks, ", l.ranks_per_node, " per node); use flat, or a node count that divides ",
        l.groups));
  }
  const int32_t node_experts = l.groups / l.nodes * l.group_size;
  // Nodes hold ranks * slots_per_rank / nodes >= experts / nodes slots each,
  // so a node always has room for its groups' experts.
  if (node_experts < slots_per_rank) {
    return absl::InvalidArgumentError(
        absl::StrCat("a node's ", node_experts, " experts cannot fill ", slots_per_rank,
                     " slots per rank without holding one expert twice"));
  }
  if (o.mode == PlacementMode::kRelaxed &&
      !(o.relaxed_target_balancedness > 0 && o.relaxed_target_balancedness <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("the relaxed placement's target balancedness ",
                                                   o.relaxed_target_balancedness,
                                                   " is outside (0, 1]"));
  }
  return absl::OkStatus();
}

std::vector<int32_t> NodeAwareLayerPlacement(const std::vector<double>& load, int32_t ranks,
                                             int32_t slots_per_rank,
                                             const NodePlacementOptions& options) {
  const Layout l = MakeLayout(static_cast<int32_t>(load.size()), ranks, slots_per_rank, options);
  switch (options.mode) {
    case PlacementMode::kFlat:
      break;
    case PlacementMode::kNodeLimited:
      return NodeLimitedLayer(load, l).slot_expert;
    case PlacementMode::kRelaxed:
      return RelaxedLayer(load, l, options.relaxed_target_balancedness);
  }
  return BalancedLayerPlacement(load, ranks, slots_per_rank);
}

absl::StatusOr<Placement> PlacementFromTrace(const LoadTrace& trace, int32_t ranks,
                                             int32_t redundant,
                                             const NodePlacementOptions& options) {
  Placement p;
  p.ranks = ranks;
  p.experts = trace.experts;
  p.slots_per_rank = SlotsPerRank(trace.experts, redundant, ranks);
  if (absl::Status s = ValidateNodePlacement(options, trace.experts, ranks, p.slots_per_rank);
      !s.ok()) {
    return s;
  }
  for (const auto& [layer, load] : trace.layers) {
    p.layers[layer] = NodeAwareLayerPlacement(load, ranks, p.slots_per_rank, options);
  }
  return p;
}

double NodesPerGroup(const std::vector<int32_t>& slot_expert, int32_t experts,
                     int32_t routing_groups, int32_t slots_per_rank, int32_t ranks_per_node) {
  if (experts < 1 || routing_groups < 1 || slots_per_rank < 1 || ranks_per_node < 1) return 0;
  const int32_t group_size = std::max(experts / routing_groups, 1);
  const auto slots_per_node = static_cast<size_t>(slots_per_rank) * ranks_per_node;
  const size_t nodes = (slot_expert.size() + slots_per_node - 1) / slots_per_node;
  std::vector<char> seen(static_cast<size_t>(routing_groups) * nodes, 0);
  int64_t pairs = 0;
  for (size_t s = 0; s < slot_expert.size(); ++s) {
    const int32_t e = slot_expert[s];
    if (e < 0 || e >= experts) continue;
    const auto g = static_cast<size_t>(std::min(e / group_size, routing_groups - 1));
    char& mark = seen[g * nodes + s / slots_per_node];
    if (!mark) ++pairs;
    mark = 1;
  }
  return static_cast<double>(pairs) / routing_groups;
}

}  // namespace moeserve::scheduler
