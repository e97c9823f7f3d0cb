// How the service behaves when things go wrong around it: a worker killed
// mid-stream, a worker coming back, draining, deadlines. Each test starts its
// own coordinator and worker processes on loopback.
#include <chrono>
#include <memory>
#include <string>
#include <thread>

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
    coordinator_ =
        std::make_unique<Process>(kBin + "/tools/coordinator/moeserve-coordinator",
                                  Flags(planes_.CoordinatorFlags(), {"--metrics-port", "0"}),
                                  ::testing::TempDir() + "/fault_coordinator.log");
    channel_ = planes_.PublicChannel();
    admin_channel_ = planes_.AdminChannel();
    StartWorker();
  }

  void StartWorker() {
    worker_ = std::make_unique<Process>(
        kBin + "/tools/worker/moeserve-worker",
        Flags(planes_.WorkerFlags(), {"--model", kFixture, "--connect-timeout-seconds", "20"}),
        ::testing::TempDir() + "/fault_worker.log");
    ASSERT_TRUE(WaitFor([&] { return Health() == Status::SERVING; }, 60))
        << coordinator_->log() << worker_->log();
  }

  Status::ServingStatus Health() { return HealthOf(channel_); }

  // Runs a greedy request; returns its status and the tokens it received.
  grpc::Status Generate(uint32_t max_tokens, int* tokens = nullptr,
                        std::chrono::milliseconds deadline = std::chrono::seconds(60),
                        const std::function<void()>& after_first_chunk = nullptr) {
    auto stub = v1::Inference::NewStub(channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + deadline);
    v1::GenerateRequest req;
    for (uint32_t id : {3u, 1u, 4u, 1u, 5u}) req.mutable_token_ids()->add_ids(id);
    req.mutable_stopping()->set_max_tokens(max_tokens);
    req.mutable_stopping()->set_ignore_eos(true);
    req.mutable_sampling()->set_temperature(0.0f);
    auto reader = stub->Generate(&ctx, req);
    v1::GenerateResponse r;
    int n = 0;
    while (reader->Read(&r)) {
      if (r.has_chunk()) {
        n += r.chunk().token_ids_size();
        if (n == 1 && after_first_chunk) after_first_chunk();
      }
    }
    if (tokens != nullptr) *tokens = n;
    return reader->Finish();
  }

  Planes planes_{"fault"};
  std::unique_ptr<Process> coordinator_;
  std::unique_ptr<Process> worker_;
  std::shared_ptr<grpc::Channel> channel_;        // public port
  std::shared_ptr<grpc::Channel> admin_channel_;  // internal port, Admin token
};

TEST_F(FaultTest, KilledWorkerEndsStreamsWithUnavailableAndServiceResumesWhenItReturns) {
  int tokens = 0;
  const auto start = std::chrono::steady_clock::now();
  grpc::Status s = Generate(10000, &tokens, std::chrono::seconds(60),
                            [&] { worker_->Stop(/*seconds=*/0); });  // SIGTERM, then SIGKILL
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("worker"));
  EXPECT_GE(tokens, 1);
  EXPECT_LT(seconds, 30.0) << "the stream must end promptly, not hang";
  EXPECT_TRUE(WaitFor([&] { return Health() == Status::NOT_SERVING; }, 10));
  // New requests are refused while no worker serves...
  EXPECT_EQ(Generate(4).error_code(), grpc::StatusCode::UNAVAILABLE);
  // ...and served again once a worker is back.
  StartWorker();
  int n = 0;
  grpc::Status again = Generate(4, &n);
  EXPECT_TRUE(again.ok()) << again.error_message();
  EXPECT_EQ(n, 4);
}

TEST_F(FaultTest, DrainRefusesNewRequestsAndFinishesAdmittedOnes) {
  std::thread long_request([&] {
    int n = 0;
    grpc::Status s = Generate(300, &n);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(n, 300) << "an admitted request finishes while draining";
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
  int n = 0;
  EXPECT_TRUE(Generate(3, &n).ok());
  EXPECT_EQ(n, 3);
}

}  // namespace
}  // namespace moeserve::testing
