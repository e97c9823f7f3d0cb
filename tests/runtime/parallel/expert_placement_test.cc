#include "runtime/parallel/expert_placement.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace moeserve {
namespace {

TEST(ExpertPlacementTest, ContiguousHoldsEveryExpertOnceWhenRanksDivideThem) {
  LayerPlacement p = ContiguousPlacement(4, 16);
  EXPECT_EQ(p.slots_per_rank, 4);
  EXPECT_EQ(p.ExpertsOfRank(2), (std::vector<int32_t>{8, 9, 10, 11}));
  for (int e = 0; e < 16; ++e) EXPECT_EQ(p.replicas[static_cast<size_t>(e)].size(), 1u);
  EXPECT_EQ(p.RankOfSlot(13), 3);
  EXPECT_EQ(p.LocalSlot(13), 1);
}

TEST(ExpertPlacementTest, ContiguousFillsSpareSlotsWithReplicas) {
  LayerPlacement p = ContiguousPlacement(3, 8);  // 3 slots per rank, 1 spare
  EXPECT_EQ(p.slots_per_rank, 3);
  EXPECT_EQ(p.ExpertsOfRank(2), (std::vector<int32_t>{6, 7, 0}));
  EXPECT_EQ(p.replicas[0], (std::vector<int32_t>{0, 8}));
}

TEST(ExpertPlacementTest, RedundantReplicasAreListedInSlotOrder) {
  auto p = MakeLayerPlacement(2, 3, 4, {0, 1, 3, 2, 3, 0});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->replicas[3], (std::vector<int32_t>{2, 4}));
  EXPECT_EQ(p->replicas[0], (std::vector<int32_t>{0, 5}));
}

TEST(ExpertPlacementTest, RejectsBadPlacementsWithTheReason) {
  struct Case {
    int32_t ranks, slots, experts;
    std::vector<int32_t> slot_expert;
    std::string message;
  };
  const std::vector<Case> cases = {
      {2, 2, 4, {0, 1, 2}, "lists 3 slots"},
      {2, 2, 4, {0, 1, 2, 4}, "slot 3 holds expert 4"},
      {2, 2, 4, {0, 1, 2, 1}, "expert 3 is in no slot"},
      {1, 3, 3, {0, 1, 1}, "holds expert 1 twice"},
      {2, 1, 4, {0, 1}, "cannot hold 4 experts"},
      {0, 1, 4, {}, "ranks, slots per rank and experts"},
  };
  for (const Case& c : cases) {
    auto p = MakeLayerPlacement(c.ranks, c.slots, c.experts, c.slot_expert);
    ASSERT_FALSE(p.ok()) << c.message;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find(c.message), std::string::npos) << p.status();
  }
}

}  // namespace
}  // namespace moeserve
