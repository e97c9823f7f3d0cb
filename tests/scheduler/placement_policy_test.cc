#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "scheduler/placement/expert_load_window.h"
#include "scheduler/placement/expert_placement.h"

namespace moeserve::scheduler {
namespace {

TEST(DefaultPlacementTest, IsValidForEveryShape) {
  for (int32_t experts : {1, 3, 8, 16, 64}) {
    for (int32_t ranks : {1, 2, 3, 4, 8}) {
      for (int32_t redundant : {0, 1, 4, 9}) {
        if (SlotsPerRank(experts, redundant, ranks) > experts) continue;  // would need repeats
        const Placement p = DefaultPlacement({1, 2}, experts, ranks, redundant);
        EXPECT_TRUE(ValidatePlacement(p).ok())
            << ValidatePlacement(p) << " " << experts << " experts " << ranks << " ranks "
            << redundant << " redundant";
        EXPECT_GE(p.redundant(), redundant);
      }
    }
  }
}

// Greedy packing is a heuristic: it is not optimal, and on an already
// near-balanced load it can come out a hair below the contiguous layout. It
// must never be meaningfully worse, and on skewed loads it must help.
TEST(BalancedPlacementTest, IsValidAndNotWorseThanContiguous) {
  std::mt19937 rng(11);
  double sum_balanced = 0, sum_contiguous = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const int32_t experts = 2 + static_cast<int32_t>(rng() % 40);
    const int32_t ranks = 1 + static_cast<int32_t>(rng() % 8);
    const int32_t redundant = static_cast<int32_t>(rng() % 10);
    const int32_t slots = SlotsPerRank(experts, redundant, ranks);
    if (slots > experts) continue;
    std::vector<double> load(static_cast<size_t>(experts));
    // Skewed loads, as real routers produce: a few hot experts.
    for (auto& l : load) l = std::pow(static_cast<double>(rng() % 1000), 2.0);
    LoadTrace trace;
    trace.experts = experts;
    trace.layers[3] = load;
    const Placement balanced = PlacementFromTrace(trace, ranks, redundant);
    ASSERT_TRUE(ValidatePlacement(balanced).ok()) << ValidatePlacement(balanced);
    const Placement plain = DefaultPlacement({3}, experts, ranks, redundant);
    const double b = Balancedness(load, balanced.layers.at(3), ranks, slots);
    const double c = Balancedness(load, plain.layers.at(3), ranks, plain.slots_per_rank);
    EXPECT_GE(b, c - 0.01) << "trial " << trial;
    sum_balanced += b;
    sum_contiguous += c;
    EXPECT_LE(b, 1.0 + 1e-12);
  }
  EXPECT_GT(sum_balanced, sum_contiguous * 1.05);
}

// Found by tests/fuzz/fuzz_placement_json: `moeserve placement` wrote an
// invalid placement (an expert twice on one rank) for a trace whose experts
// cannot fill a rank's slots, e.g. 4 experts, 1 rank, 1 redundant.
TEST(PlacementShapeTest, RefusesMoreSlotsPerRankThanExperts) {
  EXPECT_TRUE(CheckPlacementShape(4, 1, 0).ok());
  EXPECT_TRUE(CheckPlacementShape(4, 2, 4).ok());  // every expert on both ranks
  const absl::Status one_rank = CheckPlacementShape(4, 1, 1);
  EXPECT_EQ(one_rank.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(one_rank.message().find("each rank would hold 5 slots, more than the 4 distinct"),
            std::string::npos)
      << one_rank;
  EXPECT_NE(one_rank.message().find("use at most 0 redundant experts"), std::string::npos);
  EXPECT_FALSE(CheckPlacementShape(4, 2, 5).ok());
  EXPECT_FALSE(CheckPlacementShape(0, 1, 0).ok());
  EXPECT_FALSE(CheckPlacementShape(4, 0, 0).ok());
  EXPECT_FALSE(CheckPlacementShape(4, 1, -1).ok());
  // No int32 overflow on the way.
  EXPECT_FALSE(CheckPlacementShape(1 << 30, 1, 1 << 30).ok());
  // The shapes it passes give valid placements, from a trace and without.
  for (int32_t experts : {1, 3, 8}) {
    for (int32_t ranks : {1, 2, 3, 4}) {
      for (int32_t redundant : {0, 1, 2, 5, 9}) {
        EXPECT_EQ(CheckPlacementShape(experts, ranks, redundant).ok(),
                  SlotsPerRank(experts, redundant, ranks) <= experts);
        if (!CheckPlacementShape(experts, ranks, redundant).ok()) continue;
        LoadTrace trace;
        trace.experts = experts;
        trace.layers[1] = std::vector<double>(static_cast<size_t>(experts), 1.0);
        EXPECT_TRUE(ValidatePlacement(PlacementFromTrace(trace, ranks, redundant)).ok());
        EXPECT_TRUE(ValidatePlacement(DefaultPlacement({1}, experts, ranks, redundant)).ok());
      }
    }
  }
}

TEST(BalancedPlacementTest, ReplicatesTheHottestExpert) {
  // Expert 0 takes half the tokens: with two spare slots it gets them.
  const std::vector<double> load = {80, 10, 10, 10, 10, 10, 10, 20};
  const std::vector<int32_t> slots = BalancedLayerPlacement(load, 2, 5);
  int copies = 0;
  for (int32_t e : slots) copies += e == 0 ? 1 : 0;
  EXPECT_EQ(copies, 2);
  EXPECT_GT(Balancedness(load, slots, 2, 5), 0.95);
}

TEST(BalancednessTest, IsMeanOverMaxOfRankLoads) {
  // Rank 0 holds experts 0, 1 (30 tokens), rank 1 experts 2, 3 (10 tokens).
  EXPECT_DOUBLE_EQ(Balancedness({20, 10, 5, 5}, {0, 1, 2, 3}, 2, 2), 20.0 / 30.0);
  // A replica halves its expert's load on each rank.
  EXPECT_DOUBLE_EQ(Balancedness({20, 0, 0}, {0, 1, 0, 2}, 2, 2), 1.0);
  EXPECT_DOUBLE_EQ(Balancedness({0, 0}, {0, 1}, 2, 1), 1.0);
}

TEST(PlacementJsonTest, RoundTripsAndRejectsBadFiles) {
  const Placement p = DefaultPlacement({1, 2}, 8, 2, 2);
  auto back = ParsePlacementJson(PlacementToJson(p));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->layers, p.layers);
  EXPECT_EQ(back->slots_per_rank, 5);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"[]", "not a JSON object"},
      {R"({"ranks": 2, "slots_per_rank": 4, "experts": 8})", "\"layers\""},
      {R"({"ranks": 0, "slots_per_rank": 4, "experts": 8, "layers": {}})", "\"ranks\""},
      {R"({"ranks": 2, "slots_per_rank": 4, "experts": 8, "layers": {"x": []}})", "layer key"},
      {R"({"ranks": 2, "slots_per_rank": 4, "experts": 8, "layers": {"1": [0, 1]}})",
       "2 slots listed, 8 expected"},
      {R"({"ranks": 1, "slots_per_rank": 2, "experts": 2, "layers": {"1": [0, 0.5]}})",
       "not a number"},
      {R"({"ranks": 1, "slots_per_rank": 2, "experts": 2, "layers": {"1": [0, 0]}})",
       "holds expert 0 twice"},
  };
  for (const auto& [text, message] : bad) {
    auto parsed = ParsePlacementJson(text);
    ASSERT_FALSE(parsed.ok()) << text;
    EXPECT_NE(parsed.status().message().find(message), std::string::npos) << parsed.status();
  }
  auto trace = ParseLoadTraceJson(R"({"experts": 2, "layers": {"1": [1, 2, 3]}})");
  ASSERT_FALSE(trace.ok());
  EXPECT_NE(trace.status().message().find("3 counts for 2 experts"), std::string::npos);
}

TEST(ExpertLoadWindowTest, KeepsTheLastStepsOnly) {
  ExpertLoadWindow w(2, 2);
  w.Add({{1, {1, 0}}});
  w.Add({{1, {0, 2}}});
  w.Add({{1, {4, 0}}, {2, {1, 1}}});
  const LoadTrace t = w.Totals();
  EXPECT_EQ(t.layers.at(1), (std::vector<double>{4, 2}));
  EXPECT_EQ(t.layers.at(2), (std::vector<double>{1, 1}));
  w.Add({{1, {0, 0, 9}}});  // wrong length: ignored, but the step counts
  EXPECT_EQ(w.Totals().layers.at(1), (std::vector<double>{4, 0}));
  EXPECT_EQ(w.steps_in_window(), 2);
}

TEST(PickRankTest, PrefersHeadroomThenFewerSequences) {
  EXPECT_EQ(PickRank({{10, 0, 5, 0}, {20, 0, 9, 9}}), 1);
  EXPECT_EQ(PickRank({{10, 0, 5, 0}, {20, 15, 0, 0}}), 0);  // waiting work eats rank 1's room
  EXPECT_EQ(PickRank({{10, 0, 5, 1}, {10, 0, 2, 1}}), 1);
  EXPECT_EQ(PickRank({{10, 0, 2, 0}, {10, 0, 2, 0}}), 0);
}

}  // namespace
}  // namespace moeserve::scheduler
