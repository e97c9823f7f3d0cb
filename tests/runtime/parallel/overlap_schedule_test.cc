#include "runtime/parallel/overlap_schedule.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"

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

// A step whose largest rank has more tokens than one exchange holds: each
// micro-batch's MoE block packs, exchanges, computes and reduces round after
// round (the exchange buffers are reused), the shared experts once, and the
// overlap is off whatever was asked.
TEST(OverlapScheduleTest, ExchangeRoundsRunOneAfterAnotherWithoutOverlap) {
  const std::vector<bool> moe = {true};
  const OverlapSchedule s = BuildOverlapSchedule(moe, 2, /*overlap=*/true, /*rounds=*/2);
  EXPECT_EQ(s.DebugString(),
            "attention(A0) inline dispatch(A0) shared(A0) experts(A0) inline combine(A0) "
            "reduce(A0) pack(A0.1) inline dispatch(A0.1) experts(A0.1) inline combine(A0.1) "
            "reduce(A0.1) "
            "attention(B0) inline dispatch(B0) shared(B0) experts(B0) inline combine(B0) "
            "reduce(B0) pack(B0.1) inline dispatch(B0.1) experts(B0.1) inline combine(B0.1) "
            "reduce(B0.1)");
  EXPECT_EQ(s.CommunicationOrder().size(), 8u);
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

// The executor on CPU streams, whose work runs on threads of their own. Each
// piece of work records that it ran; `Needs` checks, when a stage runs, that
// what the schedule says it depends on has already run.
class Recorder {
 public:
  void Ran(const std::string& what) {
    std::lock_guard<std::mutex> lock(mu_);
    done_.insert(what);
    order_.push_back(what);
  }
  bool Has(const std::string& what) {
    std::lock_guard<std::mutex> lock(mu_);
    return done_.count(what) > 0;
  }
  void Needs(const std::string& stage, const std::string& dependency) {
    if (!Has(dependency)) {
      std::lock_guard<std::mutex> lock(mu_);
      violations_.push_back(stage + " ran before " + dependency);
    }
  }
  std::vector<std::string> violations() {
    std::lock_guard<std::mutex> lock(mu_);
    return violations_;
  }

 private:
  std::mutex mu_;
  std::set<std::string> done_;
  std::vector<std::string> order_;
  std::vector<std::string> violations_;
};

std::string Name(StageKind kind, int mb, int64_t layer) {
  return std::string(StageName(kind)) + (mb == 0 ? "A" : "B") + std::to_string(layer);
}

// Queues `schedule` with every stage a host function of its stream that
// checks its dependencies: dispatch after its attention (router), experts
// after its dispatch, combine after its experts, reduce after its combine.
// `comm_delay` slows every piece of work on the communication stream.
std::vector<std::string> RunChecked(const OverlapSchedule& schedule,
                                    std::chrono::microseconds compute_delay,
                                    std::chrono::microseconds comm_delay,
                                    absl::Status* status = nullptr) {
  CpuBackendOptions compute_options;
  compute_options.stream.delay_per_item = compute_delay;
  CpuBackendOptions comm_options;
  comm_options.stream.delay_per_item = comm_delay;
  auto backend = CreateCpuBackend(compute_options);
  auto comm_backend = CreateCpuBackend(comm_options);
  auto compute_stream = backend->CreateStream();
  auto comm_stream = comm_backend->CreateStream();
  OverlapExecutor executor(*backend, *compute_stream, *comm_stream, schedule);
  Recorder rec;
  auto compute = [&](const Stage& s) {
    compute_stream->HostFunction([&rec, s] {
      const std::string me = Name(s.kind, s.micro_batch, s.layer);
      if (s.kind == StageKind::kExperts) {
        rec.Needs(me, Name(StageKind::kDispatch, s.micro_batch, s.layer));
      }
      if (s.kind == StageKind::kReduce) {
        rec.Needs(me, Name(StageKind::kCombine, s.micro_batch, s.layer));
      }
      rec.Ran(me);
      return absl::OkStatus();
    });
  };
  auto communicate = [&](const Stage& s, Stream& on) {
    on.HostFunction([&rec, s] {
      const std::string me = Name(s.kind, s.micro_batch, s.layer);
      rec.Needs(me,
                Name(s.kind == StageKind::kDispatch ? StageKind::kAttention : StageKind::kExperts,
                     s.micro_batch, s.layer));
      rec.Ran(me);
      return absl::OkStatus();
    });
  };
  executor.Queue(compute, communicate);
  absl::Status s = compute_stream->Synchronize();
  if (absl::Status c = comm_stream->Synchronize(); s.ok()) s = c;
  if (status != nullptr) *status = s;
  return rec.violations();
}

TEST(OverlapExecutorTest, EventsOrderEveryDependencyWhicheverStreamIsSlow) {
  const std::vector<bool> moe = {true, false, true};
  using us = std::chrono::microseconds;
  for (bool overlap : {true, false}) {
    const OverlapSchedule schedule = BuildOverlapSchedule(moe, 2, overlap);
    for (auto [compute_delay, comm_delay] :
         {std::pair{us(0), us(0)}, std::pair{us(0), us(2000)}, std::pair{us(2000), us(0)}}) {
      absl::Status status;
      EXPECT_THAT(RunChecked(schedule, compute_delay, comm_delay, &status), ::testing::IsEmpty())
          << "overlap " << overlap;
      EXPECT_TRUE(status.ok()) << status;
    }
  }
}

TEST(OverlapExecutorTest, AScheduleThatForgetsAWaitFailsOnCpuStreams) {
  // Drop the wait before experts(A, 0): on a slow communication stream the
  // experts then run before their dispatch, and the CPU twin shows it (a
  // 200 ms head start: a starved compute thread cannot hide the missing wait).
  OverlapSchedule schedule = BuildOverlapSchedule({true}, 2, true);
  auto& steps = schedule.steps;
  const auto wait = std::find_if(steps.begin(), steps.end(), [](const ScheduleStep& s) {
    return s.action == ScheduleStep::kWait && s.stage.kind == StageKind::kDispatch &&
           s.stage.micro_batch == 0;
  });
  ASSERT_NE(wait, steps.end());
  steps.erase(wait);
  const std::vector<std::string> violations =
      RunChecked(schedule, std::chrono::microseconds(0), std::chrono::microseconds(200000));
  EXPECT_THAT(violations, ::testing::Contains("expertsA0 ran before dispatchA0"));
}

TEST(OverlapExecutorTest, CommunicationRunsBesideCompute) {
  auto backend = CreateCpuBackend();
  auto compute_stream = backend->CreateStream();
  auto comm_stream = backend->CreateStream();
  const OverlapSchedule schedule = BuildOverlapSchedule({true, true, true}, 2, true);
  OverlapExecutor executor(*backend, *compute_stream, *comm_stream, schedule);
  std::atomic<int> comm_running{0};
  std::atomic<bool> computed_during_comm{false};
  auto compute = [&](const Stage&) {
    compute_stream->HostFunction([&] {
      if (comm_running.load() > 0) computed_during_comm = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      if (comm_running.load() > 0) computed_during_comm = true;
      return absl::OkStatus();
    });
  };
  auto communicate = [&](const Stage&, Stream& on) {
    on.HostFunction([&] {
      ++comm_running;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      --comm_running;
      return absl::OkStatus();
    });
  };
  executor.Queue(compute, communicate);
  ASSERT_TRUE(compute_stream->Synchronize().ok());
  ASSERT_TRUE(comm_stream->Synchronize().ok());
  EXPECT_TRUE(computed_during_comm.load());
  // The compute stream measured its waits on the communication stream.
  EXPECT_TRUE(compute_stream->times().measured);
}

TEST(OverlapExecutorTest, AFailedCollectiveFailsThePassWithoutRunningWhatDependsOnIt) {
  const std::vector<bool> moe = {true, true};
  for (bool overlap : {true, false}) {
    auto backend = CreateCpuBackend();
    auto compute_stream = backend->CreateStream();
    auto comm_stream = backend->CreateStream();
    OverlapExecutor executor(*backend, *compute_stream, *comm_stream,
                             BuildOverlapSchedule(moe, 2, overlap));
    std::mutex mu;
    std::vector<Stage> computed;
    auto compute = [&](const Stage& s) {
      compute_stream->HostFunction([&, s] {
        std::lock_guard<std::mutex> lock(mu);
        computed.push_back(s);
        return absl::OkStatus();
      });
    };
    auto communicate = [&](const Stage& s, Stream& on) {
      on.HostFunction([s]() -> absl::Status {
        if (s.kind == StageKind::kDispatch && s.layer == 0 && s.micro_batch == 0) {
          return absl::UnavailableError("peer lost");
        }
        return absl::OkStatus();
      });
    };
    executor.Queue(compute, communicate);
    const absl::Status s = compute_stream->Synchronize();
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    (void)comm_stream->Synchronize();
    // No experts stage ran on the failed dispatch's data, nor anything after.
    std::lock_guard<std::mutex> lock(mu);
    for (const Stage& st : computed) {
      EXPECT_NE(st.kind, StageKind::kExperts) << "overlap " << overlap;
      EXPECT_NE(st.kind, StageKind::kReduce) << "overlap " << overlap;
    }
  }
}

}  // namespace
}  // namespace moeserve
