#include "scheduler/placement/node_placement.h"

#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace moeserve::scheduler {
namespace {

// DeepSeek-V3's shape at test size: 64 experts in 8 routing groups of 8, on
// 4 nodes of 4 ranks with 5 slots each (16 redundant).
constexpr int32_t kExperts = 64, kGroups = 8, kRanks = 16, kPerNode = 4, kSlots = 5;

NodePlacementOptions Options(PlacementMode mode) {
  NodePlacementOptions o;
  o.mode = mode;
  o.ranks_per_node = kPerNode;
  o.routing_groups = kGroups;
  return o;
}

// Skewed as routers are: lognormal popularity, a few experts far hotter.
std::vector<double> SkewedLoad(std::mt19937_64& rng) {
  std::lognormal_distribution<double> d(0.0, 1.2);
  std::vector<double> load(kExperts);
  for (auto& x : load) x = 100 * d(rng);
  return load;
}

void ExpectValid(const std::vector<int32_t>& slots) {
  Placement p;
  p.ranks = kRanks;
  p.slots_per_rank = kSlots;
  p.experts = kExperts;
  p.layers[0] = slots;
  EXPECT_TRUE(ValidatePlacement(p).ok()) << ValidatePlacement(p);
}

TEST(NodePlacementTest, NodeLimitedKeepsEveryGroupOnOneNode) {
  std::mt19937_64 rng(1);
  for (int trial = 0; trial < 50; ++trial) {
    const std::vector<double> load = SkewedLoad(rng);
    const std::vector<int32_t> slots =
        NodeAwareLayerPlacement(load, kRanks, kSlots, Options(PlacementMode::kNodeLimited));
    ExpectValid(slots);
    std::vector<std::set<size_t>> nodes_of_group(kGroups);
    for (size_t s = 0; s < slots.size(); ++s) {
      nodes_of_group[static_cast<size_t>(slots[s] / (kExperts / kGroups))].insert(
          s / (kSlots * kPerNode));
    }
    for (int32_t g = 0; g < kGroups; ++g) {
      EXPECT_EQ(nodes_of_group[static_cast<size_t>(g)].size(), 1u) << "group " << g;
    }
    EXPECT_DOUBLE_EQ(NodesPerGroup(slots, kExperts, kGroups, kSlots, kPerNode), 1.0);
  }
}

TEST(NodePlacementTest, RelaxedMeetsItsTargetOnFewerNodesThanFlat) {
  std::mt19937_64 rng(2);
  double relaxed_nodes = 0, flat_nodes = 0;
  for (int trial = 0; trial < 30; ++trial) {
    const std::vector<double> load = SkewedLoad(rng);
    NodePlacementOptions relaxed = Options(PlacementMode::kRelaxed);
    relaxed.relaxed_target_balancedness = 0.9;
    const std::vector<int32_t> r = NodeAwareLayerPlacement(load, kRanks, kSlots, relaxed);
    const std::vector<int32_t> f =
        NodeAwareLayerPlacement(load, kRanks, kSlots, Options(PlacementMode::kFlat));
    const std::vector<int32_t> n =
        NodeAwareLayerPlacement(load, kRanks, kSlots, Options(PlacementMode::kNodeLimited));
    ExpectValid(r);
    const double flat_balance = Balancedness(load, f, kRanks, kSlots);
    // Relaxed reaches its target wherever flat can, and never loses to node-limited.
    if (flat_balance >= 0.9) {
      EXPECT_GE(Balancedness(load, r, kRanks, kSlots), 0.9) << trial;
    }
    EXPECT_GE(Balancedness(load, r, kRanks, kSlots), Balancedness(load, n, kRanks, kSlots) - 1e-12);
    relaxed_nodes += NodesPerGroup(r, kExperts, kGroups, kSlots, kPerNode);
    flat_nodes += NodesPerGroup(f, kExperts, kGroups, kSlots, kPerNode);
  }
  EXPECT_LT(relaxed_nodes, flat_nodes * 0.75);
}

TEST(NodePlacementTest, RelaxedStaysOnOneNodeWhenThatIsBalancedEnough) {
  const std::vector<double> flat_load(kExperts, 10.0);
  const std::vector<int32_t> slots =
      NodeAwareLayerPlacement(flat_load, kRanks, kSlots, Options(PlacementMode::kRelaxed));
  EXPECT_DOUBLE_EQ(NodesPerGroup(slots, kExperts, kGroups, kSlots, kPerNode), 1.0);
}

// The anchor case of issue 14 at test size: node-limited beats a plain
// contiguous layout on skewed loads, and flat beats both.
TEST(NodePlacementTest, ImprovesOverTheDefaultOnSkewedLoads) {
  std::mt19937_64 rng(3);
  double contiguous = 0, limited = 0, flat = 0;
  const Placement plain = DefaultPlacement({0}, kExperts, kRanks, kRanks * kSlots - kExperts);
  for (int trial = 0; trial < 30; ++trial) {
    const std::vector<double> load = SkewedLoad(rng);
    contiguous += Balancedness(load, plain.layers.at(0), kRanks, kSlots);
    limited += Balancedness(
        load, NodeAwareLayerPlacement(load, kRanks, kSlots, Options(PlacementMode::kNodeLimited)),
        kRanks, kSlots);
    flat += Balancedness(
        load, NodeAwareLayerPlacement(load, kRanks, kSlots, Options(PlacementMode::kFlat)), kRanks,
        kSlots);
  }
  EXPECT_GT(limited, contiguous * 1.1);
  EXPECT_GT(flat, limited);
  EXPECT_GT(flat / 30, 0.97);
}

TEST(NodePlacementTest, NodesPerGroupCountsReplicasOffNode) {
  // 2 nodes of 1 rank with 3 slots, 4 experts in 2 groups: group 0 = {0, 1}.
  EXPECT_DOUBLE_EQ(NodesPerGroup({0, 1, 0, 2, 3, 1}, 4, 2, 3, 1), 1.5);
  EXPECT_DOUBLE_EQ(NodesPerGroup({0, 1, 0, 2, 3, 2}, 4, 2, 3, 1), 1.0);
}

TEST(NodePlacementTest, InvalidConfigurationsSayWhy) {
  struct Bad {
    NodePlacementOptions options;
    int32_t experts, ranks, slots;
    std::string message;
  };
  NodePlacementOptions limited = Options(PlacementMode::kNodeLimited);
  NodePlacementOptions uneven_nodes = limited;
  uneven_nodes.ranks_per_node = 3;
  NodePlacementOptions uneven_groups = limited;
  uneven_groups.routing_groups = 7;
  NodePlacementOptions three_nodes = limited;
  three_nodes.ranks_per_node = 2;  // 6 ranks below: 3 nodes for 8 groups
  NodePlacementOptions two_per_node = limited;
  two_per_node.ranks_per_node = 2;  // 8 nodes of one group (8 experts) each
  NodePlacementOptions bad_target = Options(PlacementMode::kRelaxed);
  bad_target.relaxed_target_balancedness = 1.5;
  const std::vector<Bad> bad = {
      {uneven_nodes, 64, 16, 5, "16 ranks do not split into nodes of 3 ranks per node"},
      {uneven_groups, 64, 16, 5, "64 experts do not split into 7 routing groups"},
      {three_nodes, 64, 6, 12, "8 routing groups do not spread evenly over 3 nodes"},
      {two_per_node, 64, 16, 9, "a node's 8 experts cannot fill 9 slots per rank"},
      {limited, 64, 16, 3, "16 ranks of 3 slots cannot hold 64 experts"},
      {bad_target, 64, 16, 5, "target balancedness 1.5 is outside (0, 1]"},
  };
  for (const Bad& b : bad) {
    const absl::Status s = ValidateNodePlacement(b.options, b.experts, b.ranks, b.slots);
    ASSERT_FALSE(s.ok()) << b.message;
    EXPECT_NE(s.message().find(b.message), std::string::npos) << s;
  }
  // Flat ignores groups and nodes beyond their shape; 3 nodes is fine there.
  NodePlacementOptions flat = three_nodes;
  flat.mode = PlacementMode::kFlat;
  EXPECT_TRUE(ValidateNodePlacement(flat, 64, 6, 12).ok());
  LoadTrace trace;
  trace.experts = 64;
  trace.layers[1] = std::vector<double>(64, 1.0);
  auto p = PlacementFromTrace(trace, 6, 8, three_nodes);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("use flat"), std::string::npos);
  EXPECT_EQ(ParsePlacementMode("nodes").status().message(),
            "unknown placement mode \"nodes\": use flat, node-limited or relaxed");
  EXPECT_EQ(*ParsePlacementMode("node-limited"), PlacementMode::kNodeLimited);
}

}  // namespace
}  // namespace moeserve::scheduler
