// `moeserve bench` against real processes on loopback: a moeserve-coordinator
// and a moeserve-worker serving the golden DeepSeek-V3 fixture.
#include <sys/wait.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/engine/null_model.h"
#include "tests/integration/process.h"
#include "tools/moeserve/bench_stats.h"

namespace moeserve::testing {
namespace {

const std::string kFixture = std::string(MOESERVE_FIXTURES_DIR) + "/deepseek_v3_small_bf16";
const std::string kBin = MOESERVE_BINARY_DIR;

// Runs `moeserve bench ARGS`; stdout only: the report.
CommandResult Bench(const std::string& args) {
  return RunCommand(kBin + "/tools/moeserve/moeserve bench " + args);
}

void ExpectOrdered(const nlohmann::json& s, const std::string& name) {
  EXPECT_LE(s.at("p50").get<double>(), s.at("p90").get<double>()) << name;
  EXPECT_LE(s.at("p90").get<double>(), s.at("p99").get<double>()) << name;
  EXPECT_GE(s.at("p50").get<double>(), 0) << name;
}

class BenchTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    planes_ = new Planes("bench");
    addr_ = planes_->address();
    coordinator_ = new Process(
        kBin + "/tools/coordinator/moeserve-coordinator",
        Flags(planes_->CoordinatorFlags(), {"--metrics-port", std::to_string(FreePort())}),
        ProcessScratchDir("logs") + "/bench_coordinator.log");
    worker_ =
        new Process(kBin + "/tools/worker/moeserve-worker",
                    Flags(planes_->WorkerFlags(), {"--model", kFixture, "--kv-cache-tokens", "8192",
                                                   "--connect-timeout-seconds", "30"}),
                    ProcessScratchDir("logs") + "/bench_worker.log");
    ASSERT_TRUE(WaitFor(
        [] {
          return HealthOf(grpc::CreateChannel(addr_, grpc::InsecureChannelCredentials())) ==
                 grpc::health::v1::HealthCheckResponse::SERVING;
        },
        60))
        << coordinator_->log() << worker_->log();
  }
  static void TearDownTestSuite() {
    delete worker_;
    delete coordinator_;
    delete planes_;
  }

  static inline Planes* planes_ = nullptr;
  static inline std::string addr_;  // public
  static inline Process* coordinator_ = nullptr;
  static inline Process* worker_ = nullptr;
};

TEST_F(BenchTest, FixedConcurrencyRunCompletesWithTheDrawnLengths) {
  const CommandResult run = Bench("--server " + addr_ +
                                  " --num-requests 40 --concurrency 8 --prompt-tokens uniform:4:64"
                                  " --output-tokens uniform:1:16 --seed 3 --json");
  ASSERT_EQ(run.exit_code, 0) << run.out;
  const auto report = nlohmann::json::parse(run.out);
  EXPECT_EQ(report.at("completed"), 40) << run.out;
  EXPECT_EQ(report.at("failed"), 0) << run.out;

  // The lengths the server saw are the ones the seed draws (lengths do not
  // depend on the vocabulary, so any vocab_size gives the same sum).
  WorkloadOptions w;
  w.num_requests = 40;
  w.prompt_tokens = *ParseLengthDist("uniform:4:64");
  w.output_tokens = *ParseLengthDist("uniform:1:16");
  w.vocab_size = 1;
  w.seed = 3;
  int64_t drawn_output = 0, drawn_prompt = 0;
  for (const BenchRequest& r : DrawWorkload(w)) {
    drawn_output += r.output_tokens;
    drawn_prompt += static_cast<int64_t>(r.prompt_ids.size());
  }
  EXPECT_EQ(report.at("output_tokens"), drawn_output);
  EXPECT_EQ(report.at("config").at("drawn_output_tokens"), drawn_output);
  EXPECT_EQ(report.at("prompt_tokens"), drawn_prompt);
  std::cout << "drawn output tokens: " << drawn_output << ", prompt tokens: " << drawn_prompt
            << "\n";

  for (const char* name : {"ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"}) {
    ExpectOrdered(report.at(name), name);
  }
  EXPECT_EQ(report.at("ttft_ms").at("count"), 40);
  EXPECT_EQ(report.at("itl_ms").at("count"), drawn_output - 40);  // n-1 gaps per request
  EXPECT_GT(report.at("request_throughput").get<double>(), 0);
  EXPECT_GT(report.at("output_token_throughput").get<double>(), 0);
  EXPECT_GT(report.at("total_token_throughput").get<double>(),
            report.at("output_token_throughput").get<double>());
  EXPECT_GT(report.at("duration_s").get<double>(), 0);
  EXPECT_LE(report.at("goodput").at("share").get<double>(), 1.0);
}

TEST_F(BenchTest, PoissonRunCompletes) {
  const CommandResult run = Bench("--server " + addr_ +
                                  " --request-rate 50 --num-requests 30 --prompt-tokens 16"
                                  " --output-tokens normal:6:3 --seed 1 --warmup 2 --json");
  ASSERT_EQ(run.exit_code, 0) << run.out;
  const auto report = nlohmann::json::parse(run.out);
  EXPECT_EQ(report.at("completed"), 30) << run.out;
  EXPECT_EQ(report.at("failed"), 0) << run.out;
  EXPECT_EQ(report.at("output_tokens"), report.at("config").at("drawn_output_tokens"));
  EXPECT_TRUE(report.at("config").at("concurrency").is_null());
  ExpectOrdered(report.at("e2e_ms"), "e2e_ms");
}

TEST_F(BenchTest, TextReportAndBadFlags) {
  const CommandResult text = Bench("--server " + addr_ +
                                   " --num-requests 4 --concurrency 2 --prompt-tokens 8"
                                   " --output-tokens 3 --vocab-size 100");
  ASSERT_EQ(text.exit_code, 0) << text.out;
  EXPECT_NE(text.out.find("Completed requests:"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("TTFT"), std::string::npos) << text.out;
  EXPECT_EQ(Bench("--server " + addr_ + " --prompt-tokens uniform:9:3 2>/dev/null").exit_code, 2);
  EXPECT_EQ(Bench("--num-requests 3 2>/dev/null").exit_code, 2);  // no --server
}

// The serving path alone: a group of two ranks whose workers load no weights
// (--null-model-for-benchmarks). Greedy tokens follow the null model's rule
// (so every step's plan reached the right sequence and position), and a
// bench run over it completes.
TEST(NullModelBenchTest, AGroupOfNullModelsServesItsFixedTokensAndABench) {
  const Planes planes("null_model");
  const std::string addr = planes.address();
  Process coordinator(kBin + "/tools/coordinator/moeserve-coordinator",
                      Flags(planes.CoordinatorFlags(), {"--metrics-port", "0", "--ep-size", "2"}),
                      ProcessScratchDir("logs") + "/null_coordinator.log");
  std::vector<std::unique_ptr<Process>> workers;
  for (int r = 0; r < 2; ++r) {
    workers.push_back(std::make_unique<Process>(
        kBin + "/tools/worker/moeserve-worker",
        Flags(planes.WorkerFlags(),
              {"--model", kFixture, "--rank", std::to_string(r), "--null-model-for-benchmarks",
               "--connect-timeout-seconds", "30"}),
        ProcessScratchDir("logs") + "/null_worker" + std::to_string(r) + ".log"));
  }
  ASSERT_TRUE(WaitFor(
      [&] {
        return HealthOf(grpc::CreateChannel(addr, grpc::InsecureChannelCredentials())) ==
               grpc::health::v1::HealthCheckResponse::SERVING;
      },
      60))
      << coordinator.log() << workers[0]->log();
  EXPECT_NE(workers[0]->log().find("NULL MODEL FOR BENCHMARKS"), std::string::npos);

  const CommandResult generated =
      RunCommand(kBin + "/tools/moeserve/moeserve generate --server " + addr +
                 " --prompt-ids 5,6,7 --max-tokens 6 --temperature 0 --ignore-eos --json");
  ASSERT_EQ(generated.exit_code, 0) << generated.out;
  const auto tokens = nlohmann::json::parse(generated.out).at("tokens");
  ASSERT_EQ(tokens.size(), 6u) << generated.out;
  int32_t last = 7;
  int64_t position = 2;
  for (const auto& t : tokens) {
    const int32_t expected = NullModelToken(last, position++, 1000);
    EXPECT_EQ(t.at("id").get<int32_t>(), expected) << generated.out;
    last = expected;
  }

  const CommandResult run = Bench("--server " + addr +
                                  " --num-requests 48 --concurrency 24 --prompt-tokens 32"
                                  " --output-tokens 16 --seed 5 --json");
  ASSERT_EQ(run.exit_code, 0) << run.out;
  const auto report = nlohmann::json::parse(run.out);
  EXPECT_EQ(report.at("completed"), 48) << run.out;
  EXPECT_EQ(report.at("output_tokens"), 48 * 16) << run.out;
}

}  // namespace
}  // namespace moeserve::testing
