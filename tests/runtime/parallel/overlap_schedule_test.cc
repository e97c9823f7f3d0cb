#include "runtime/parallel/overlap_schedule.h"

#include <atomic>
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"

namespace moeserve {
namespace {

using Key = std::tuple<int, int, int64_t>;
Key KeyOf(const Stage& s) { return {static_cast<int>(s.kind), s.micro_batch, s.layer}; }

// Replays a schedule as the executor would and checks every dependency: a
// stage runs only after what it needs, each communication stage is issued
// once and a wait always follows its post.
void CheckDependencies(const OverlapSchedule& schedule, const std::vector<bool>& moe, int mbs) {
  std::set<Key> done, posted;
  auto finished = [&](StageKind k, int mb, int64_t l) {
    return done.count({static_cast<int>(k), mb, l}) > 0;
  };
  for (const ScheduleStep& step : schedule.steps) {
    const Stage& s = step.stage;
    SCOPED_TRACE(schedule.DebugString());
    switch (step.action) {
      case ScheduleStep::kPost:
        ASSERT_TRUE(IsCommunication(s.kind));
        ASSERT_TRUE(posted.insert(KeyOf(s)).second);
        break;
      case ScheduleStep::kWait:
        ASSERT_TRUE(posted.count(KeyOf(s)));
        done.insert(KeyOf(s));
        break;
      case ScheduleStep::kInline:
        ASSERT_TRUE(IsCommunication(s.kind));
        done.insert(KeyOf(s));
        break;
      case ScheduleStep::kCompute:
        ASSERT_FALSE(IsCommunication(s.kind));
        if (s.kind == StageKind::kAttention && s.layer > 0 &&
            moe[static_cast<size_t>(s.layer - 1)]) {
          ASSERT_TRUE(finished(StageKind::kReduce, s.micro_batch, s.layer - 1));
        }
        if (s.kind == StageKind::kAttention && s.layer > 0 &&
            !moe[static_cast<size_t>(s.layer - 1)]) {
          ASSERT_TRUE(finished(StageKind::kAttention, s.micro_batch, s.layer - 1));
        }
        if (s.kind == StageKind::kExperts) {
          ASSERT_TRUE(finished(StageKind::kDispatch, s.micro_batch, s.layer));
        }
        if (s.kind == StageKind::kShared) {
          ASSERT_TRUE(finished(StageKind::kAttention, s.micro_batch, s.layer));
        }
        if (s.kind == StageKind::kReduce) {
          ASSERT_TRUE(finished(StageKind::kShared, s.micro_batch, s.layer));
        }
        if (s.kind == StageKind::kReduce) {
          ASSERT_TRUE(finished(StageKind::kCombine, s.micro_batch, s.layer));
        }
        done.insert(KeyOf(s));
        break;
    }
  }
  // Everything ran: attention of every layer and micro-batch, and the MoE
  // stages of every MoE layer.
  for (int64_t l = 0; l < static_cast<int64_t>(moe.size()); ++l) {
    for (int mb = 0; mb < mbs; ++mb) {
      EXPECT_TRUE(finished(StageKind::kAttention, mb, l));
      if (moe[static_cast<size_t>(l)]) {
        EXPECT_TRUE(finished(StageKind::kReduce, mb, l));
      }
    }
  }
}

TEST(OverlapScheduleTest, OverlapRunsTheOtherMicroBatchWhileAnAllToAllIsInFlight) {
  const std::vector<bool> moe = {false, true, true};
  const OverlapSchedule s = BuildOverlapSchedule(moe, 2, true);
  EXPECT_EQ(s.DebugString(),
            "attention(A0) attention(B0) "
            "attention(A1) post dispatch(A1) attention(B1) post dispatch(B1) "
            "shared(A1) wait dispatch(A1) experts(A1) post combine(A1) "
            "shared(B1) wait dispatch(B1) experts(B1) post combine(B1) "
            "wait combine(A1) reduce(A1) attention(A2) post dispatch(A2) "
            "wait combine(B1) reduce(B1) attention(B2) post dispatch(B2) "
            "shared(A2) wait dispatch(A2) experts(A2) post combine(A2) "
            "shared(B2) wait dispatch(B2) experts(B2) post combine(B2) "
            "wait combine(A2) reduce(A2) wait combine(B2) reduce(B2)");
  CheckDependencies(s, moe, 2);
}

TEST(OverlapScheduleTest, WithoutOverlapEachMicroBatchRunsItsCollectivesInline) {
  const std::vector<bool> moe = {true, false};
  const OverlapSchedule s = BuildOverlapSchedule(moe, 2, false);
  EXPECT_EQ(
      s.DebugString(),
      "attention(A0) inline dispatch(A0) shared(A0) experts(A0) inline combine(A0) reduce(A0) "
      "attention(B0) inline dispatch(B0) shared(B0) experts(B0) inline combine(B0) reduce(B0) "
      "attention(A1) attention(B1)");
  CheckDependencies(s, moe, 2);
}

TEST(OverlapScheduleTest, EveryShapeKeepsItsDependencies) {
  for (int layers = 1; layers <= 5; ++layers) {
    for (int mask = 0; mask < (1 << layers); ++mask) {
      std::vector<bool> moe(static_cast<size_t>(layers));
      for (int l = 0; l < layers; ++l) moe[static_cast<size_t>(l)] = (mask >> l) & 1;
      for (int mbs : {1, 2}) {
        for (bool overlap : {false, true}) {
          CheckDependencies(BuildOverlapSchedule(moe, mbs, overlap), moe, mbs);
        }
      }
    }
  }
}

TEST(OverlapScheduleTest, CollectivesAreIssuedInTheSameOrderInBothModesPerMicroBatch) {
  // Ranks must agree on one order; every rank builds the same schedule, and
  // within a mode the order is fixed: dispatch A, dispatch B, combine A,
  // combine B per layer with overlap.
  const std::vector<bool> moe = {true, true};
  std::vector<std::string> order;
  for (const Stage& s : BuildOverlapSchedule(moe, 2, true).CommunicationOrder()) {
    order.push_back(std::string(StageName(s.kind)) + (s.micro_batch ? "B" : "A") +
                    std::to_string(s.layer));
  }
  EXPECT_EQ(order,
            (std::vector<std::string>{"dispatchA0", "dispatchB0", "combineA0", "combineB0",
                                      "dispatchA1", "dispatchB1", "combineA1", "combineB1"}));
}

TEST(OverlapExecutorTest, CommunicationRunsBesideComputeAndIsTimed) {
  const std::vector<bool> moe = {true, true, true};
  OverlapExecutor executor;
  std::atomic<int> comm_running{0};
  std::atomic<bool> computed_during_comm{false};
  std::vector<std::string> compute_order;
  auto compute = [&](const Stage& s) {
    if (comm_running.load() > 0) computed_during_comm = true;
    compute_order.push_back(StageName(s.kind));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  };
  auto communicate = [&](const Stage&) {
    ++comm_running;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    --comm_running;
    return absl::OkStatus();
  };
  CommunicationTiming timing;
  ASSERT_TRUE(executor.Run(BuildOverlapSchedule(moe, 2, true), compute, communicate, &timing).ok());
  EXPECT_TRUE(computed_during_comm.load());
  // 12 collectives of >= 5 ms each.
  EXPECT_GE(timing.all_to_all_seconds, 12 * 0.005);
  EXPECT_LE(timing.exposed_seconds, timing.all_to_all_seconds + 1e-3);
  EXPECT_EQ(compute_order.size(), 3u * 2u * 4u);  // attention, shared, experts, reduce

  // Inline: all of it is exposed, and it runs again on the same executor.
  timing = {};
  ASSERT_TRUE(
      executor.Run(BuildOverlapSchedule(moe, 2, false), compute, communicate, &timing).ok());
  EXPECT_DOUBLE_EQ(timing.exposed_seconds, timing.all_to_all_seconds);
}

TEST(OverlapExecutorTest, AFailedCollectiveStopsThePassAndWaitsForWhatWasPosted) {
  const std::vector<bool> moe = {true, true};
  OverlapExecutor executor;
  std::atomic<int> comm_calls{0};
  std::vector<Stage> computed;
  auto compute = [&](const Stage& s) { computed.push_back(s); };
  auto communicate = [&](const Stage& s) -> absl::Status {
    ++comm_calls;
    if (s.kind == StageKind::kDispatch && s.layer == 0 && s.micro_batch == 0) {
      return absl::UnavailableError("peer lost");
    }
    return absl::OkStatus();
  };
  for (bool overlap : {true, false}) {
    computed.clear();
    comm_calls = 0;
    absl::Status s =
        executor.Run(BuildOverlapSchedule(moe, 2, overlap), compute, communicate, nullptr);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    // No experts stage ran on the failed dispatch's data.
    for (const Stage& st : computed) {
      EXPECT_NE(st.kind, StageKind::kExperts) << "overlap " << overlap;
    }
    EXPECT_LE(comm_calls.load(), 2);
  }
}

}  // namespace
}  // namespace moeserve
