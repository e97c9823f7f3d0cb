// The service end to end, with real processes on loopback: a
// moeserve-coordinator and a moeserve-worker serving the golden DeepSeek-V3
// fixture, called through the public gRPC API.
#include <atomic>
#include <chrono>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "moeserve/v1/admin.grpc.pb.h"
#include "moeserve/v1/inference.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/integration/process.h"

namespace moeserve::testing {
namespace {

using ::testing::HasSubstr;

const std::string kFixture = std::string(MOESERVE_FIXTURES_DIR) + "/deepseek_v3_small_bf16";
const std::string kBin = MOESERVE_BINARY_DIR;

struct Stream {
  std::vector<uint32_t> tokens;
  std::vector<float> logprobs;
  bool has_final = false;
  v1::Final final;
  grpc::Status status;
  int chunks = 0;
};

Stream Generate(v1::Inference::Stub& stub, const v1::GenerateRequest& request,
                int cancel_after_chunks = -1) {
  Stream s;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto reader = stub.Generate(&ctx, request);
  v1::GenerateResponse r;
  while (reader->Read(&r)) {
    if (r.has_chunk()) {
      ++s.chunks;
      for (uint32_t id : r.chunk().token_ids()) s.tokens.push_back(id);
      for (const auto& lp : r.chunk().logprobs()) s.logprobs.push_back(lp.chosen().logprob());
      if (s.chunks == cancel_after_chunks) ctx.TryCancel();
    }
    if (r.has_final()) {
      s.has_final = true;
      s.final = r.final();
    }
  }
  s.status = reader->Finish();
  return s;
}

v1::GenerateRequest TokenRequest(const std::vector<uint32_t>& ids, uint32_t max_tokens) {
  v1::GenerateRequest r;
  for (uint32_t id : ids) r.mutable_token_ids()->add_ids(id);
  r.mutable_stopping()->set_max_tokens(max_tokens);
  r.mutable_stopping()->set_ignore_eos(true);
  r.mutable_sampling()->set_temperature(0.0f);
  return r;
}

class ServingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    planes_ = new Planes("serving");
    port_ = planes_->port();
    metrics_port_ = FreePort();
    std::vector<std::string> flags = planes_->CoordinatorFlags();
    for (const char* f : {"--max-waiting", "48", "--max-running-seqs", "32"}) flags.push_back(f);
    flags.push_back("--metrics-port");
    flags.push_back(std::to_string(metrics_port_));
    coordinator_ = new Process(kBin + "/tools/coordinator/moeserve-coordinator", flags,
                               ProcessScratchDir("logs") + "/coordinator.log");
    channel_ = new std::shared_ptr<grpc::Channel>(planes_->PublicChannel());
    admin_channel_ = new std::shared_ptr<grpc::Channel>(planes_->AdminChannel());
    // Health must say NOT_SERVING until the worker is in.
    ASSERT_TRUE(WaitFor(
        [] { return HealthOf(*channel_) == grpc::health::v1::HealthCheckResponse::NOT_SERVING; },
        20))
        << coordinator_->log();
    std::vector<std::string> worker_flags = planes_->WorkerFlags();
    for (const char* f : {"--model", kFixture.c_str(), "--kv-cache-tokens", "8192"}) {
      worker_flags.push_back(f);
    }
    worker_ = new Process(kBin + "/tools/worker/moeserve-worker", worker_flags,
                          ProcessScratchDir("logs") + "/worker.log");
    ASSERT_TRUE(WaitFor(
        [] { return HealthOf(*channel_) == grpc::health::v1::HealthCheckResponse::SERVING; }, 60))
        << coordinator_->log() << worker_->log();
  }
  static void TearDownTestSuite() {
    delete worker_;
    delete coordinator_;
    delete channel_;
    delete admin_channel_;
    delete planes_;
  }

  std::unique_ptr<v1::Inference::Stub> Inference() { return v1::Inference::NewStub(*channel_); }
  std::unique_ptr<v1::Admin::Stub> Admin() { return v1::Admin::NewStub(*admin_channel_); }
  v1::ClusterState State() {
    grpc::ClientContext ctx;
    v1::ClusterState state;
    EXPECT_TRUE(Admin()->GetClusterState(&ctx, {}, &state).ok());
    return state;
  }

  static inline int port_ = 0;
  static inline int metrics_port_ = 0;
  static inline Process* coordinator_ = nullptr;
  static inline Process* worker_ = nullptr;
  static inline std::shared_ptr<grpc::Channel>* channel_ = nullptr;  // public port
  static inline std::shared_ptr<grpc::Channel>* admin_channel_ = nullptr;
  static inline Planes* planes_ = nullptr;
};

// Same float32 arithmetic as tests/runtime/model/deepseek_v3_golden_test.cc.
constexpr double kLogprobTolerance = 5e-5;

TEST_F(ServingTest, StreamedGreedyTokensMatchTheReference) {
  std::ifstream in(kFixture + "/golden.json");
  const auto golden = nlohmann::json::parse(in).at("cases")[2];
  std::vector<uint32_t> prompt = golden.at("prompt_ids").get<std::vector<uint32_t>>();
  v1::GenerateRequest req = TokenRequest(prompt, 4);
  req.set_logprobs(1);
  Stream s = Generate(*Inference(), req);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  ASSERT_TRUE(s.has_final);
  ASSERT_EQ(s.tokens.size(), 4u);
  for (size_t t = 0; t < 4; ++t) {
    const auto& g = golden.at("greedy")[t];
    if (g.at("margin").get<double>() <= 0.01) break;
    EXPECT_EQ(s.tokens[t], g.at("id").get<uint32_t>()) << t;
    EXPECT_NEAR(s.logprobs[t], g.at("logprob").get<double>(), kLogprobTolerance) << t;
  }
  EXPECT_EQ(s.final.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(s.final.usage().prompt_tokens(), prompt.size());
  EXPECT_EQ(s.final.usage().completion_tokens(), 4u);
  EXPECT_GT(s.final.timings().total_seconds(), 0.0);
}

TEST_F(ServingTest, ConcurrentStreamsAllCompleteWithCorrectUsage) {
  constexpr int kStreams = 64;
  std::vector<Stream> results(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      std::vector<uint32_t> prompt;
      for (int t = 0; t < 3 + 7 * i; ++t)
        prompt.push_back(static_cast<uint32_t>((i * 31 + t) % 1000));
      results[static_cast<size_t>(i)] = Generate(*Inference(), TokenRequest(prompt, 2 + i % 5));
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kStreams; ++i) {
    const Stream& s = results[static_cast<size_t>(i)];
    ASSERT_TRUE(s.status.ok()) << i << ": " << s.status.error_message();
    ASSERT_TRUE(s.has_final) << i;
    EXPECT_EQ(s.tokens.size(), static_cast<size_t>(2 + i % 5)) << i;
    EXPECT_EQ(s.final.usage().prompt_tokens(), static_cast<uint32_t>(3 + 7 * i)) << i;
    EXPECT_EQ(s.final.usage().completion_tokens(), s.tokens.size()) << i;
  }
}

TEST_F(ServingTest, QueueOverflowIsResourceExhaustedWhileAdmittedRequestsComplete) {
  // 32 running + 48 waiting are admitted; 128 long requests at once overflow.
  constexpr int kStreams = 128;
  std::vector<Stream> results(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      results[static_cast<size_t>(i)] =
          Generate(*Inference(), TokenRequest({static_cast<uint32_t>(i), 7, 9}, 100));
    });
  }
  for (auto& t : threads) t.join();
  int rejected = 0, completed = 0;
  for (const Stream& s : results) {
    if (s.status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++rejected;
      EXPECT_THAT(s.status.error_message(), HasSubstr("waiting queue is full"));
      EXPECT_TRUE(s.tokens.empty());
    } else {
      ASSERT_TRUE(s.status.ok()) << s.status.error_code() << ": " << s.status.error_message();
      EXPECT_EQ(s.tokens.size(), 100u);
      ++completed;
    }
  }
  // The first 80 arrivals hold their places for 100 steps while the other
  // 48 arrive within milliseconds: at least one of those must be refused.
  EXPECT_GT(rejected, 0) << completed << " completed";
  EXPECT_GE(completed, 80) << rejected << " rejected";
}

TEST_F(ServingTest, BadRequestsFailAloneWithTheirCode) {
  struct Case {
    std::function<void(v1::GenerateRequest&)> edit;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](v1::GenerateRequest& r) { r.mutable_token_ids()->clear_ids(); }, "the prompt is empty"},
      {[](v1::GenerateRequest& r) { r.mutable_token_ids()->set_ids(0, 1000); },
       "outside the vocabulary [0, 1000)"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_temperature(-1); },
       "sampling.temperature"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_p(0); }, "sampling.top_p"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_k(-1); }, "sampling.top_k"},
      {[](v1::GenerateRequest& r) { r.set_logprobs(21); }, "logprobs must be in [0, 20]"},
      {[](v1::GenerateRequest& r) { (*r.mutable_sampling()->mutable_logit_bias())[7] = 101; },
       "sampling.logit_bias[7] must be in [-100, 100], got 101"},
      {[](v1::GenerateRequest& r) { (*r.mutable_sampling()->mutable_logit_bias())[1000] = 1; },
       "sampling.logit_bias: token id 1000 is outside the vocabulary"},
      {[](v1::GenerateRequest& r) { r.mutable_stopping()->set_max_tokens(200000); },
       "exceeds the context length 163840"},
      {[](v1::GenerateRequest& r) {
         for (int i = 0; i < 17; ++i) r.mutable_stopping()->add_stop("x");
       },
       "stopping.stop has 17 strings"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest req = TokenRequest({1, 2, 3}, 2);
    c.edit(req);
    Stream s = Generate(*Inference(), req);
    EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.message;
    EXPECT_THAT(s.status.error_message(), HasSubstr(c.message));
  }
  Stream ok = Generate(*Inference(), TokenRequest({1, 2, 3}, 2));
  EXPECT_TRUE(ok.status.ok()) << "the service keeps serving after bad requests";
}

// Repetition, presence and frequency penalties reach the worker with the
// prompt's length, change the greedy tokens (the same prompt and penalties
// as StepExecutorTest.GreedyDecodingWithPenaltiesFollowsTheReference, which
// holds each choice to the definition), give the same tokens every time,
// also beside other requests, and keep the model's log-probabilities.
TEST_F(ServingTest, PenaltiesChangeGreedyTokensTheSameWayEveryTime) {
  const std::vector<uint32_t> prompt = {0, 333, 972, 156, 406, 668, 17, 42};
  v1::GenerateRequest plain = TokenRequest(prompt, 8);
  plain.set_logprobs(1);
  v1::GenerateRequest penalized = plain;
  penalized.mutable_sampling()->set_repetition_penalty(1.3f);
  penalized.mutable_sampling()->set_presence_penalty(0.4f);
  penalized.mutable_sampling()->set_frequency_penalty(0.6f);
  const Stream base = Generate(*Inference(), plain);
  const Stream first = Generate(*Inference(), penalized);
  ASSERT_TRUE(base.status.ok()) << base.status.error_message();
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  ASSERT_EQ(first.tokens.size(), 8u);
  EXPECT_NE(first.tokens, base.tokens);
  // The first token's log-probability is the model's, as without penalties
  // (the repetition penalty may still pick another token: compare only if
  // it picked the same).
  if (first.tokens[0] == base.tokens[0]) {
    EXPECT_NEAR(first.logprobs[0], base.logprobs[0], kLogprobTolerance);
  }
  std::vector<Stream> again(3);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < again.size(); ++i) {
    threads.emplace_back([&, i] {
      again[i] = Generate(*Inference(), i == 1 ? TokenRequest({5, 6, 7, 8, 9}, 6) : penalized);
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i : {size_t{0}, size_t{2}}) {
    ASSERT_TRUE(again[i].status.ok()) << again[i].status.error_message();
    EXPECT_EQ(again[i].tokens, first.tokens) << i;
  }
  // A logit bias of +100 on one token makes greedy decoding repeat it.
  v1::GenerateRequest forced = TokenRequest(prompt, 4);
  (*forced.mutable_sampling()->mutable_logit_bias())[123] = 100.0f;
  const Stream f = Generate(*Inference(), forced);
  ASSERT_TRUE(f.status.ok()) << f.status.error_message();
  EXPECT_EQ(f.tokens, std::vector<uint32_t>(4, 123));
  // A prompt longer than a KV block: the second time its first block comes
  // from the prefix cache, and the worker gets that block's tokens for the
  // penalties along with the rest: the same tokens.
  std::vector<uint32_t> long_prompt;
  for (uint32_t t = 0; t < 150; ++t) long_prompt.push_back((t * 37 + 11) % 1000);
  v1::GenerateRequest long_request = TokenRequest(long_prompt, 6);
  *long_request.mutable_sampling() = penalized.sampling();
  const Stream cold = Generate(*Inference(), long_request);
  const Stream warm = Generate(*Inference(), long_request);
  ASSERT_TRUE(cold.status.ok()) << cold.status.error_message();
  ASSERT_TRUE(warm.status.ok()) << warm.status.error_message();
  EXPECT_GT(warm.final.usage().cached_tokens(), 0u);
  EXPECT_EQ(warm.tokens, cold.tokens);
}

TEST_F(ServingTest, CancellingMidStreamFreesTheKvBlocks) {
  Stream s = Generate(*Inference(), TokenRequest({5, 6, 7, 8}, 2000), /*cancel_after_chunks=*/3);
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_FALSE(s.has_final);
  ASSERT_TRUE(WaitFor(
      [&] { return State().workers_size() == 1 && State().workers(0).kv_blocks_used() == 0; }, 10))
      << "KV blocks still used after the cancel: " << State().DebugString();
}

TEST_F(ServingTest, ModelInfoAndClusterStateDescribeTheDeployment) {
  grpc::ClientContext ctx;
  v1::ModelInfo info;
  ASSERT_TRUE(Inference()->GetModelInfo(&ctx, {}, &info).ok());
  EXPECT_EQ(info.model_type(), "deepseek_v3");
  EXPECT_EQ(info.vocab_size(), 1000u);
  EXPECT_EQ(info.max_context_tokens(), 163840u);
  const v1::ClusterState state = State();
  ASSERT_EQ(state.workers_size(), 1);
  EXPECT_EQ(state.workers(0).status(), v1::WORKER_STATUS_READY);
  EXPECT_EQ(state.workers(0).kv_blocks_total(), 8192u / 64u);
}

TEST_F(ServingTest, MetricsEndpointServesTheMoeserveMetrics) {
  Generate(*Inference(), TokenRequest({1, 2, 3}, 2));
  Generate(*Inference(), TokenRequest({}, 2));  // refused: empty prompt
  const std::string text = HttpGet(metrics_port_, "/metrics");
  for (const char* name :
       {"moeserve_requests_running", "moeserve_requests_waiting", "moeserve_kv_cache_usage_ratio",
        "moeserve_prompt_tokens_total", "moeserve_generation_tokens_total",
        "moeserve_requests_finished_total", "moeserve_time_to_first_token_seconds_bucket",
        "moeserve_inter_token_latency_seconds", "moeserve_request_latency_seconds",
        "moeserve_request_queue_seconds", "moeserve_step_duration_seconds", "moeserve_step_tokens",
        "moeserve_workers_up 1", "moeserve_requests_rejected_total{reason=\"invalid_argument\"}"}) {
    EXPECT_THAT(text, HasSubstr(name));
  }
}

// Step plans carry what changed: a running sequence's decode step sends its
// token and the blocks appended, not its whole block table and sampling, so
// a decode step's plan is as large at 1000 tokens of context (16 blocks of
// 64) as at 10. Bytes per decode step are measured as the difference between
// two requests of the same prompt length that generate 5 and 45 tokens,
// over 40. With the whole table each step, the long context's steps would
// carry 15 more block ids (at least 15 bytes more); varint growth of the
// context length and table size allows a few bytes.
TEST_F(ServingTest, DecodeStepPlansDoNotGrowWithTheContext) {
  auto plan_bytes = [&] {
    const std::optional<double> bytes =
        MetricValue(metrics_port_, "moeserve_step_plan_bytes_total");
    EXPECT_TRUE(bytes.has_value()) << HttpGet(metrics_port_, "/metrics");
    return bytes.value_or(0.0);
  };
  auto per_decode_step = [&](size_t prompt_tokens, uint32_t salt) {
    double bytes[2];
    for (int i = 0; i < 2; ++i) {
      std::vector<uint32_t> prompt;  // ids of two varint bytes; a new prompt each time
      for (size_t t = 0; t < prompt_tokens; ++t) {
        prompt.push_back(200 + static_cast<uint32_t>((t * 7 + salt * 31 + i * 13) % 700));
      }
      const double before = plan_bytes();
      const Stream s = Generate(*Inference(), TokenRequest(prompt, i == 0 ? 5 : 45));
      EXPECT_TRUE(s.status.ok()) << s.status.error_message();
      bytes[i] = plan_bytes() - before;
    }
    return (bytes[1] - bytes[0]) / 40;
  };
  const double short_context = per_decode_step(10, 1);
  const double long_context = per_decode_step(1000, 2);
  std::cout << "plan bytes per decode step: " << short_context << " at 10 prompt tokens, "
            << long_context << " at 1000\n";
  EXPECT_GT(short_context, 0.0);
  EXPECT_LE(long_context, short_context + 4);
}

TEST_F(ServingTest, StreamedTokensEqualTheEngineCliForTheSameSeed) {
  const std::string flags =
      " --prompt-ids 0,333,972,156 --max-tokens 10 --temperature 0.9 --top-p 0.95 --seed 7 "
      "--ignore-eos --json";
  const std::string cli = kBin + "/tools/moeserve/moeserve generate";
  const auto local = nlohmann::json::parse(RunCommand(cli + " --model " + kFixture + flags).out);
  const auto served = nlohmann::json::parse(
      RunCommand(cli + " --server 127.0.0.1:" + std::to_string(port_) + flags).out);
  ASSERT_EQ(local.at("tokens").size(), 10u);
  ASSERT_EQ(served.at("tokens").size(), 10u);
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_EQ(served.at("tokens")[i].at("id"), local.at("tokens")[i].at("id")) << i;
    // Same float32 arithmetic as tests/runtime/model/deepseek_v3_golden_test.cc.
    EXPECT_NEAR(served.at("tokens")[i].at("logprob").get<double>(),
                local.at("tokens")[i].at("logprob").get<double>(), 5e-5);
  }
}

// The CLI's penalty and bias flags reach the server: a +100 bias forces a
// token, and the same request with penalties gives the tokens the gRPC test
// above gets. Without --server they are refused, not ignored.
TEST_F(ServingTest, CliPenaltyAndBiasFlagsReachTheServer) {
  const std::string cli = kBin + "/tools/moeserve/moeserve generate";
  const std::string server = " --server 127.0.0.1:" + std::to_string(port_);
  const auto forced = nlohmann::json::parse(
      RunCommand(cli + server + " --prompt-ids 1,2,3 --max-tokens 3 --logit-bias 77:100 --json")
          .out);
  ASSERT_EQ(forced.at("tokens").size(), 3u);
  for (const auto& t : forced.at("tokens")) EXPECT_EQ(t.at("id"), 77);
  v1::GenerateRequest req = TokenRequest({0, 333, 972, 156, 406, 668, 17, 42}, 8);
  req.mutable_sampling()->set_repetition_penalty(1.3f);
  req.mutable_sampling()->set_presence_penalty(0.4f);
  req.mutable_sampling()->set_frequency_penalty(0.6f);
  const Stream want = Generate(*Inference(), req);
  ASSERT_TRUE(want.status.ok()) << want.status.error_message();
  const auto got = nlohmann::json::parse(
      RunCommand(cli + server +
                 " --prompt-ids 0,333,972,156,406,668,17,42 --max-tokens 8 "
                 "--repetition-penalty 1.3 --presence-penalty 0.4 --frequency-penalty 0.6 --json")
          .out);
  ASSERT_EQ(got.at("tokens").size(), want.tokens.size());
  for (size_t i = 0; i < want.tokens.size(); ++i) {
    EXPECT_EQ(got.at("tokens")[i].at("id"), want.tokens[i]) << i;
  }
  const CommandResult local =
      RunCommand(cli + " --model " + kFixture + " --prompt-ids 1,2 --presence-penalty 0.5 2>&1");
  EXPECT_NE(local.exit_code, 0);
  EXPECT_THAT(local.out, HasSubstr("penalties and --logit-bias need --server"));
}

TEST_F(ServingTest, MetricsPassPromtool) {
  Generate(*Inference(), TokenRequest({4, 5, 6}, 3));
  const std::string text = HttpGet(metrics_port_, "/metrics");
  ASSERT_FALSE(text.empty());
  const std::string path = ::testing::TempDir() + "/metrics.txt";
  std::ofstream(path) << text;
  // promtool comes from Debian's prometheus package (tools/setup.sh).
  const CommandResult promtool = RunCommand("promtool check metrics < " + path + " 2>&1");
  EXPECT_EQ(promtool.exit_code, 0) << "promtool check metrics:\n" << promtool.out;
}

}  // namespace
}  // namespace moeserve::testing
