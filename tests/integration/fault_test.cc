// How the service behaves when things go wrong around it: a worker killed or
// stopped mid-stream and replaced (or not in time), draining, deadlines. Each
// test starts its own coordinator and worker processes on loopback.
#include <signal.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "moeserve/v1/admin.grpc.pb.h"
#include "moeserve/v1/inference.grpc.pb.h"
#include "tests/integration/process.h"

namespace moeserve::testing {
namespace {

using ::testing::HasSubstr;
using Status = grpc::health::v1::HealthCheckResponse;

const std::string kFixture = std::string(MOESERVE_FIXTURES_DIR) + "/deepseek_v3_small_bf16";
const std::string kBin = MOESERVE_BINARY_DIR;

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<std::string> flags = {"--metrics-port", std::to_string(metrics_port_)};
    for (const std::string& f : ExtraCoordinatorFlags()) flags.push_back(f);
    coordinator_ = std::make_unique<Process>(kBin + "/tools/coordinator/moeserve-coordinator",
                                             Flags(planes_.CoordinatorFlags(), flags),
                                             ProcessScratchDir("logs") + "/fault_coordinator.log");
    channel_ = planes_.PublicChannel();
    admin_channel_ = planes_.AdminChannel();
    StartWorker();
  }

  virtual std::vector<std::string> ExtraCoordinatorFlags() const { return {}; }

  // Starts a worker process (the n-th of the test) without waiting for it.
  void LaunchWorker() {
    worker_ = std::make_unique<Process>(
        kBin + "/tools/worker/moeserve-worker",
        Flags(planes_.WorkerFlags(), {"--model", kFixture, "--connect-timeout-seconds", "20"}),
        ProcessScratchDir("logs") + "/fault_worker_" + std::to_string(++workers_started_) + ".log");
  }

  void StartWorker() {
    LaunchWorker();
    ASSERT_TRUE(WaitFor([&] { return Health() == Status::SERVING; }, 60))
        << coordinator_->log() << worker_->log();
  }

  Status::ServingStatus Health() { return HealthOf(channel_); }

  // A counter of the coordinator's /metrics; -1 when it is not there.
  double Metric(const std::string& name) { return MetricValue(metrics_port_, name).value_or(-1); }

  // Runs a request, greedy unless `temperature` > 0 (then seeded); returns
  // its status and the tokens it received.
  grpc::Status Generate(uint32_t max_tokens, std::vector<uint32_t>* tokens = nullptr,
                        std::chrono::milliseconds deadline = std::chrono::seconds(60),
                        const std::function<void()>& after_first_chunk = nullptr,
                        float temperature = 0.0f) {
    auto stub = v1::Inference::NewStub(channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + deadline);
    v1::GenerateRequest req;
    for (uint32_t id : {3u, 1u, 4u, 1u, 5u}) req.mutable_token_ids()->add_ids(id);
    req.mutable_stopping()->set_max_tokens(max_tokens);
    req.mutable_stopping()->set_ignore_eos(true);
    req.mutable_sampling()->set_temperature(temperature);
    if (temperature > 0) {
      req.mutable_sampling()->set_seed(1234);
      req.mutable_sampling()->set_top_p(0.9f);
    }
    auto reader = stub->Generate(&ctx, req);
    v1::GenerateResponse r;
    std::vector<uint32_t> received;
    while (reader->Read(&r)) {
      if (!r.has_chunk()) continue;
      const bool first = received.empty();
      received.insert(received.end(), r.chunk().token_ids().begin(), r.chunk().token_ids().end());
      if (first && after_first_chunk) after_first_chunk();
    }
    if (tokens != nullptr) *tokens = received;
    return reader->Finish();
  }

  int metrics_port_ = FreePort();
  int workers_started_ = 0;
  Planes planes_{"fault"};
  std::unique_ptr<Process> coordinator_;
  std::unique_ptr<Process> worker_;
  std::shared_ptr<grpc::Channel> channel_;        // public port
  std::shared_ptr<grpc::Channel> admin_channel_;  // internal port, Admin token
};

// Sampled with a seed, so that the resumed stream must also draw the same
// random numbers (they are keyed by the token's index, not by a generator's
// state); the expert-parallel test does the same greedily.
TEST_F(FaultTest, StreamsGoOnWithTheSameTokensWhenAKilledWorkerIsReplaced) {
  constexpr float kTemperature = 0.8f;
  std::vector<uint32_t> expected;
  ASSERT_TRUE(Generate(300, &expected, std::chrono::seconds(60), nullptr, kTemperature).ok());
  ASSERT_EQ(expected.size(), 300u);

  // The same request again; after its first token its worker is killed
  // (SIGKILL: no goodbye) and a new one started, which loads the model and
  // joins while the stream waits.
  std::vector<uint32_t> tokens;
  grpc::Status s = Generate(
      300, &tokens, std::chrono::seconds(120),
      [&] {
        worker_->Stop(/*seconds=*/0);
        LaunchWorker();
      },
      kTemperature);
  ASSERT_TRUE(s.ok()) << s.error_message() << coordinator_->log();
  // No error, no token repeated or missing: the resumed request is prefilled
  // again from its prompt and the tokens it had sent, and its seeded draws
  // from that context give what the uninterrupted run gave.
  EXPECT_EQ(tokens, expected);
  EXPECT_EQ(Metric("moeserve_requests_recovered_total"), 1.0)
      << "the worker must have been lost mid-stream (the stream may not finish first)";
  // And the operator is told, in the coordinator's log.
  const std::string log = coordinator_->log();
  EXPECT_THAT(log, HasSubstr("the worker group was lost: rank 0"));
  EXPECT_THAT(log, HasSubstr("1 request(s) in flight wait up to 2m for it to be whole again"));
  EXPECT_THAT(log, HasSubstr("1 request(s) resume where their streams were"));
  std::vector<uint32_t> after;
  EXPECT_TRUE(Generate(4, &after).ok());
  EXPECT_EQ(after.size(), 4u);
}

class FaultTestWithShortRecovery : public FaultTest {
  std::vector<std::string> ExtraCoordinatorFlags() const override {
    return {"--request-recovery-timeout-seconds", "1"};
  }
};

TEST_F(FaultTestWithShortRecovery, StreamsEndWithUnavailableWhenNoWorkerReturnsInTime) {
  std::vector<uint32_t> tokens;
  const auto start = std::chrono::steady_clock::now();
  grpc::Status s = Generate(10000, &tokens, std::chrono::seconds(60),
                            [&] { worker_->Stop(/*seconds=*/0); });  // SIGTERM, then SIGKILL
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("was not whole again within 1s"));
  EXPECT_THAT(s.error_message(), HasSubstr("--request-recovery-timeout-seconds"));
  EXPECT_GE(tokens.size(), 1u);
  EXPECT_LT(seconds, 30.0) << "the stream must end promptly, not hang";
  EXPECT_TRUE(WaitFor([&] { return Health() == Status::NOT_SERVING; }, 10));
  // New requests are refused while no worker serves...
  EXPECT_EQ(Generate(4).error_code(), grpc::StatusCode::UNAVAILABLE);
  // ...and served again once a worker is back.
  StartWorker();
  std::vector<uint32_t> again_tokens;
  grpc::Status again = Generate(4, &again_tokens);
  EXPECT_TRUE(again.ok()) << again.error_message();
  EXPECT_EQ(again_tokens.size(), 4u);
}

class FaultTestWithHeartbeat : public FaultTest {
  // A step timeout far beyond the test's: only the heartbeat can notice.
  std::vector<std::string> ExtraCoordinatorFlags() const override {
    return {"--worker-heartbeat-seconds", "1", "--step-timeout-seconds", "600"};
  }
};

TEST_F(FaultTestWithHeartbeat, AStoppedWorkerIsDroppedWithinTheHeartbeatAndItsStreamsGoOn) {
  std::vector<uint32_t> expected;
  ASSERT_TRUE(Generate(300, &expected).ok());
  // The worker is stopped (SIGSTOP: its connection stays open, it answers
  // nothing) after the first token, and a new one started.
  std::unique_ptr<Process> stopped;
  std::vector<uint32_t> tokens;
  const auto start = std::chrono::steady_clock::now();
  grpc::Status s = Generate(300, &tokens, std::chrono::seconds(120), [&] {
    worker_->Signal(SIGSTOP);
    stopped = std::move(worker_);
    LaunchWorker();
  });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(s.ok()) << s.error_message() << coordinator_->log();
  EXPECT_EQ(tokens, expected);
  EXPECT_EQ(Metric("moeserve_requests_recovered_total"), 1.0);
  // The heartbeat (1 s, 1 s to answer) and the new worker's start, not the
  // 600 s step timeout.
  EXPECT_LT(seconds, 60.0);
  stopped->Signal(SIGCONT);
}

TEST_F(FaultTest, ARestartedCoordinatorGetsItsWorkerBackWithoutReloadingTheModel) {
  std::vector<uint32_t> expected;
  ASSERT_TRUE(Generate(8, &expected).ok());
  coordinator_->Stop(/*seconds=*/0);  // SIGKILL: as a crash or an evicted pod
  ASSERT_TRUE(WaitFor([&] { return Health() != Status::SERVING; }, 10));
  // The same ports and secrets, as a restarted pod behind its Service has.
  coordinator_ = std::make_unique<Process>(
      kBin + "/tools/coordinator/moeserve-coordinator",
      Flags(planes_.CoordinatorFlags(), {"--metrics-port", std::to_string(metrics_port_)}),
      ProcessScratchDir("logs") + "/fault_coordinator_restarted.log");
  ASSERT_TRUE(WaitFor([&] { return Health() == Status::SERVING; }, 60))
      << coordinator_->log() << worker_->log();
  std::vector<uint32_t> tokens;
  ASSERT_TRUE(Generate(8, &tokens).ok());
  EXPECT_EQ(tokens, expected);
  // The worker registered again with the weights it had: it loaded them once.
  const std::string log = worker_->log();
  EXPECT_THAT(log, HasSubstr("registering again"));
  size_t loads = 0;
  for (size_t at = log.find("checked "); at != std::string::npos;
       at = log.find("checked ", at + 1)) {
    ++loads;
  }
  EXPECT_EQ(loads, 1u) << log;
}

TEST_F(FaultTest, DrainRefusesNewRequestsAndFinishesAdmittedOnes) {
  std::thread long_request([&] {
    std::vector<uint32_t> tokens;
    grpc::Status s = Generate(300, &tokens);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(tokens.size(), 300u) << "an admitted request finishes while draining";
  });
  ASSERT_TRUE(WaitFor(
      [&] {
        auto stub = v1::Admin::NewStub(admin_channel_);
        grpc::ClientContext ctx;
        v1::ClusterState state;
        return stub->GetClusterState(&ctx, {}, &state).ok() && state.running_requests() == 1;
      },
      20));
  auto admin = v1::Admin::NewStub(admin_channel_);
  grpc::ClientContext ctx;
  v1::DrainResponse drained;
  ASSERT_TRUE(admin->Drain(&ctx, {}, &drained).ok());
  EXPECT_EQ(drained.in_flight_requests(), 1u);
  EXPECT_EQ(Health(), Status::NOT_SERVING);
  grpc::Status refused = Generate(4);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(refused.error_message(), HasSubstr("draining"));
  long_request.join();
}

TEST_F(FaultTest, DeadlineEndsTheRequestAndFreesItsBlocks) {
  grpc::Status s = Generate(10000, nullptr, std::chrono::milliseconds(500));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(WaitFor(
      [&] {
        auto stub = v1::Admin::NewStub(admin_channel_);
        grpc::ClientContext ctx;
        v1::ClusterState state;
        return stub->GetClusterState(&ctx, {}, &state).ok() && state.workers_size() == 1 &&
               state.workers(0).kv_blocks_used() == 0;
      },
      10));
  std::vector<uint32_t> tokens;
  EXPECT_TRUE(Generate(3, &tokens).ok());
  EXPECT_EQ(tokens.size(), 3u);
}

}  // namespace
}  // namespace moeserve::testing
