// Expert parallelism with real processes: a coordinator and N worker
// processes on loopback, each rank holding a slice of the experts, tokens
// exchanged over Gloo. The group must produce the single-process engine's
// greedy tokens (and the golden fixture's), keep moving when ranks have no
// sequences, and survive losing a rank without losing a request.
#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <future>
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
using Health = grpc::health::v1::HealthCheckResponse;

const std::string kFixture = std::string(MOESERVE_FIXTURES_DIR) + "/deepseek_v3_small_bf16";
const std::string kBin = MOESERVE_BINARY_DIR;

// The group: a coordinator with --ep-size N and N workers.
class Group {
 public:
  Group(int ranks, const std::vector<std::string>& coordinator_flags, const std::string& name,
        std::vector<std::string> worker_flags = {})
      : ranks_(ranks), name_(name), worker_flags_(std::move(worker_flags)) {
    metrics_port_ = FreePort();
    addr_ = planes_.address();
    std::vector<std::string> args = Flags(
        planes_.CoordinatorFlags(), {"--metrics-port", std::to_string(metrics_port_), "--ep-size",
                                     std::to_string(ranks), "--communicator-timeout-seconds", "5"});
    args.insert(args.end(), coordinator_flags.begin(), coordinator_flags.end());
    coordinator_ = std::make_unique<Process>(kBin + "/tools/coordinator/moeserve-coordinator", args,
                                             Log("coordinator"));
    workers_.resize(static_cast<size_t>(ranks));
    for (int r = 0; r < ranks; ++r) StartWorker(r);
    channel_ = planes_.PublicChannel();
    admin_channel_ = planes_.AdminChannel();
  }

  std::string Log(const std::string& who) const {
    return ProcessScratchDir("logs") + "/ep_" + name_ + "_" + who + ".log";
  }

  void StartWorker(int rank) {
    workers_[static_cast<size_t>(rank)] = std::make_unique<Process>(
        kBin + "/tools/worker/moeserve-worker",
        Flags(Flags(planes_.WorkerFlags(),
                    {"--model", kFixture, "--rank", std::to_string(rank), "--ep-size",
                     std::to_string(ranks_), "--connect-timeout-seconds", "20",
                     "--reconnect-seconds", "60"}),
              worker_flags_),
        Log("worker" + std::to_string(rank)));
  }

  Health::ServingStatus health() { return HealthOf(channel_); }
  bool AwaitServing(double seconds) {
    return WaitFor([&] { return health() == Health::SERVING; }, seconds);
  }
  std::string logs() const {
    std::string all = "--- coordinator\n" + coordinator_->log();
    for (size_t r = 0; r < workers_.size(); ++r) {
      all += "--- worker " + std::to_string(r) + "\n" + workers_[r]->log();
    }
    return all;
  }

  int ranks_;
  std::string name_;
  std::vector<std::string> worker_flags_;
  Planes planes_{"ep_" + name_};  // after name_, which it uses
  int metrics_port_ = 0;
  std::string addr_;
  std::unique_ptr<Process> coordinator_;
  std::vector<std::unique_ptr<Process>> workers_;
  std::shared_ptr<grpc::Channel> channel_;        // public port
  std::shared_ptr<grpc::Channel> admin_channel_;  // internal port, Admin token
};

struct Stream {
  grpc::Status status;
  std::vector<uint32_t> tokens;
  std::vector<double> logprobs;
};

Stream Generate(const std::shared_ptr<grpc::Channel>& channel, const std::vector<uint32_t>& prompt,
                uint32_t max_tokens, const std::function<void()>& after_first = nullptr) {
  auto stub = v1::Inference::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  v1::GenerateRequest req;
  for (uint32_t id : prompt) req.mutable_token_ids()->add_ids(id);
  req.mutable_stopping()->set_max_tokens(max_tokens);
  req.mutable_stopping()->set_ignore_eos(true);
  req.mutable_sampling()->set_temperature(0.0f);
  req.set_logprobs(1);
  auto reader = stub->Generate(&ctx, req);
  v1::GenerateResponse r;
  Stream s;
  while (reader->Read(&r)) {
    if (!r.has_chunk()) continue;
    for (int i = 0; i < r.chunk().token_ids_size(); ++i) {
      s.tokens.push_back(r.chunk().token_ids(i));
      if (i < r.chunk().logprobs_size())
        s.logprobs.push_back(r.chunk().logprobs(i).chosen().logprob());
      if (s.tokens.size() == 1 && after_first) after_first();
    }
  }
  s.status = reader->Finish();
  return s;
}

// The single-process engine's greedy tokens for `prompt` (moeserve generate).
std::vector<uint32_t> EngineTokens(const std::vector<uint32_t>& prompt, uint32_t max_tokens) {
  std::string ids;
  for (uint32_t id : prompt) ids += (ids.empty() ? "" : ",") + std::to_string(id);
  const CommandResult r = RunCommand(
      kBin + "/tools/moeserve/moeserve generate --model " + kFixture + " --prompt-ids " + ids +
      " --max-tokens " + std::to_string(max_tokens) + " --temperature 0 --ignore-eos --json");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  std::vector<uint32_t> tokens;
  const auto j = nlohmann::json::parse(r.out, nullptr, false);
  if (j.is_discarded()) return tokens;
  for (const auto& t : j.at("tokens")) tokens.push_back(t.at("id").get<uint32_t>());
  return tokens;
}

const std::vector<std::vector<uint32_t>> kPrompts = {
    {0, 333, 972, 156}, {12, 7, 99, 999, 45, 3}, {5, 6, 7}, {800, 2, 2, 2, 9, 31, 64, 17}, {42}};
constexpr uint32_t kMaxTokens = 8;

struct GroupCase {
  std::string name;
  int ranks;
  std::vector<std::string> flags;
};

class ExpertParallelServingTest : public ::testing::TestWithParam<GroupCase> {};

TEST_P(ExpertParallelServingTest, GreedyTokensEqualTheSingleProcessEngine) {
  const GroupCase& c = GetParam();
  std::vector<std::vector<uint32_t>> expected;
  for (const auto& p : kPrompts) expected.push_back(EngineTokens(p, kMaxTokens));

  Group g(c.ranks, c.flags, c.name);
  ASSERT_TRUE(g.AwaitServing(90)) << g.logs();

  // One request alone: every other rank has no sequence and still joins
  // every collective of every step.
  Stream alone = Generate(g.channel_, kPrompts[0], kMaxTokens);
  ASSERT_TRUE(alone.status.ok()) << alone.status.error_message() << g.logs();
  EXPECT_EQ(alone.tokens, expected[0]);

  // All at once: the sequences spread over the ranks.
  std::vector<std::future<Stream>> streams;
  for (const auto& p : kPrompts) {
    streams.push_back(
        std::async(std::launch::async, [&g, p] { return Generate(g.channel_, p, kMaxTokens); }));
  }
  for (size_t i = 0; i < streams.size(); ++i) {
    Stream s = streams[i].get();
    ASSERT_TRUE(s.status.ok()) << s.status.error_message();
    EXPECT_EQ(s.tokens, expected[i]) << "prompt " << i;
  }

  // The golden fixture's greedy tokens, where the reference's margin leaves
  // no doubt; log-probabilities within 5e-5, as in the single-process tests.
  std::ifstream in(kFixture + "/golden.json");
  const auto golden = nlohmann::json::parse(in).at("cases")[2];
  const auto prompt = golden.at("prompt_ids").get<std::vector<uint32_t>>();
  Stream gs = Generate(g.channel_, prompt, 4);
  ASSERT_TRUE(gs.status.ok()) << gs.status.error_message();
  ASSERT_EQ(gs.tokens.size(), 4u);
  for (size_t t = 0; t < 4; ++t) {
    const auto& ref = golden.at("greedy")[t];
    if (ref.at("margin").get<double>() <= 0.01) break;
    EXPECT_EQ(gs.tokens[t], ref.at("id").get<uint32_t>()) << t;
    EXPECT_NEAR(gs.logprobs[t], ref.at("logprob").get<double>(), 5e-5) << t;
  }

  // Operators see the whole group.
  auto admin = v1::Admin::NewStub(g.admin_channel_);
  grpc::ClientContext ctx;
  v1::ClusterState state;
  ASSERT_TRUE(admin->GetClusterState(&ctx, v1::GetClusterStateRequest(), &state).ok());
  EXPECT_EQ(state.world_size(), static_cast<uint32_t>(c.ranks));
  ASSERT_EQ(state.workers_size(), c.ranks);
  for (const auto& w : state.workers()) EXPECT_EQ(w.status(), v1::WORKER_STATUS_READY);
  EXPECT_GT(state.placement().layers_size(), 0);
  const std::string metrics = HttpGet(g.metrics_port_, "/metrics");
  EXPECT_THAT(metrics, HasSubstr("moeserve_workers_up " + std::to_string(c.ranks)));
  EXPECT_THAT(metrics, HasSubstr("moeserve_expert_balancedness{layer="));
  EXPECT_THAT(metrics,
              HasSubstr("moeserve_worker_up{rank=\"" + std::to_string(c.ranks - 1) + "\"} 1"));
}

INSTANTIATE_TEST_SUITE_P(
    Groups, ExpertParallelServingTest,
    ::testing::Values(
        GroupCase{"two_ranks_overlap", 2, {}},
        GroupCase{"two_ranks_no_overlap_replicas", 2, {"--no-overlap", "--redundant-experts", "4"}},
        GroupCase{"four_ranks_overlap_replicas", 4, {"--redundant-experts", "2"}},
        // Prompts longer than 4 tokens per rank exchange in rounds.
        GroupCase{"two_ranks_exchange_rounds", 2, {"--max-exchange-tokens", "4"}}),
    [](const auto& info) { return info.param.name; });

// A group admits what all its ranks can run plus the waiting queue: with
// two ranks of 2 running sequences and 1 waiting, five requests are
// admitted (four run, one waits) and the sixth is refused. The waiting one
// is known to be admitted from the coordinator's waiting gauge.
TEST(ExpertParallelAdmissionTest, AGroupAdmitsWhatAllItsRanksRunPlusTheQueue) {
  Group g(2, {"--max-running-seqs", "2", "--max-waiting", "1"}, "admission");
  ASSERT_TRUE(g.AwaitServing(90)) << g.logs();
  std::atomic<int> started{0};
  std::vector<Stream> streams(5);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < 4; ++i) {
    threads.emplace_back(
        [&, i] { streams[i] = Generate(g.channel_, kPrompts[i], 120, [&] { ++started; }); });
  }
  ASSERT_TRUE(WaitFor([&] { return started.load() == 4; }, 60)) << g.logs();
  threads.emplace_back([&] { streams[4] = Generate(g.channel_, kPrompts[4], 120); });
  ASSERT_TRUE(WaitFor(
      [&] {
        return HttpGet(g.metrics_port_, "/metrics").find("moeserve_requests_waiting 1\n") !=
               std::string::npos;
      },
      60))
      << g.logs();
  const Stream refused = Generate(g.channel_, kPrompts[0], 4);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << refused.status.error_message();
  EXPECT_THAT(refused.status.error_message(), HasSubstr("1 waiting requests beside 4 running"));
  for (auto& t : threads) t.join();
  for (const Stream& s : streams) {
    EXPECT_TRUE(s.status.ok()) << s.status.error_message();
    EXPECT_EQ(s.tokens.size(), 120u);
  }
}

// Step plans send a running sequence only its new blocks; a preempted one,
// whose blocks were freed and given out again, must be sent in full. A KV
// cache of 4 blocks of 64 tokens for three requests of 150 tokens each
// forces preemptions, and every stream still gives the single process's
// greedy tokens.
TEST(ExpertParallelPreemptionTest, PreemptedSequencesAreSentInFullAndGiveTheSameTokens) {
  Group g(1, {}, "preempt", {"--kv-cache-tokens", "256"});
  ASSERT_TRUE(g.AwaitServing(90)) << g.logs();
  constexpr uint32_t kTokens = 150;
  std::vector<Stream> streams(3);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < streams.size(); ++i) {
    threads.emplace_back([&, i] { streams[i] = Generate(g.channel_, kPrompts[i], kTokens); });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < streams.size(); ++i) {
    ASSERT_TRUE(streams[i].status.ok()) << streams[i].status.error_message() << g.logs();
    EXPECT_EQ(streams[i].tokens, EngineTokens(kPrompts[i], kTokens)) << "request " << i;
  }
  const std::optional<double> preemptions =
      MetricValue(g.metrics_port_, "moeserve_preemptions_total");
  ASSERT_TRUE(preemptions.has_value()) << HttpGet(g.metrics_port_, "/metrics");
  EXPECT_GT(*preemptions, 0.0) << "nothing was preempted";
}

TEST(ExpertParallelFaultTest, StreamsGoOnWithTheSameTokensWhenAKilledRankIsReplaced) {
  Group g(2, {"--step-timeout-seconds", "20"}, "recover");
  ASSERT_TRUE(g.AwaitServing(90)) << g.logs();
  constexpr uint32_t kTokens = 120;
  // Rank 1 is killed after the first token; a new rank 1 starts at once,
  // loads its experts and joins, the survivor registers again, and the
  // stream waits for the group and goes on.
  Stream s = Generate(g.channel_, kPrompts[1], kTokens, [&] {
    g.workers_[1]->Stop(0);  // SIGKILL at once
    g.StartWorker(1);
  });
  ASSERT_TRUE(s.status.ok()) << s.status.error_message() << g.logs();
  EXPECT_EQ(s.tokens, EngineTokens(kPrompts[1], kTokens));
  const std::optional<double> recovered =
      MetricValue(g.metrics_port_, "moeserve_requests_recovered_total");
  ASSERT_TRUE(recovered.has_value()) << HttpGet(g.metrics_port_, "/metrics");
  EXPECT_EQ(*recovered, 1.0) << "the rank must have been lost mid-stream";
}

TEST(ExpertParallelFaultTest, WithoutRecoveryAKilledRankEndsRequestsAndTheGroupComesBack) {
  Group g(2, {"--step-timeout-seconds", "20", "--request-recovery-timeout-seconds", "0"}, "fault");
  ASSERT_TRUE(g.AwaitServing(90)) << g.logs();
  auto killed_at = std::chrono::steady_clock::now();
  Stream s = Generate(g.channel_, kPrompts[1], 4000, [&] {
    killed_at = std::chrono::steady_clock::now();
    g.workers_[1]->Stop(0);  // SIGKILL at once
  });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::UNAVAILABLE) << s.status.error_message();
  EXPECT_THAT(s.status.error_message(), HasSubstr("rank"));
  // Bounded: the coordinator sees the stream end at once; the surviving rank
  // gives up its collective within the communicator timeout (5 s).
  EXPECT_LT(seconds, 15.0) << g.logs();
  EXPECT_TRUE(WaitFor([&] { return g.health() == Health::NOT_SERVING; }, 5));

  // New requests are refused while the group is incomplete.
  Stream refused = Generate(g.channel_, kPrompts[2], 2);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);

  // The rank comes back; the survivor registers again and serving resumes.
  g.StartWorker(1);
  ASSERT_TRUE(g.AwaitServing(60)) << g.logs();
  Stream again = Generate(g.channel_, kPrompts[0], kMaxTokens);
  ASSERT_TRUE(again.status.ok()) << again.status.error_message() << g.logs();
  EXPECT_EQ(again.tokens, EngineTokens(kPrompts[0], kMaxTokens));
}

TEST(ExpertParallelFaultTest, AWorkerBeyondTheGroupIsTurnedAwayWithTheReason) {
  Group g(1, {}, "extra");
  ASSERT_TRUE(g.AwaitServing(60)) << g.logs();
  Process extra(kBin + "/tools/worker/moeserve-worker",
                Flags(g.planes_.WorkerFlags(), {"--model", kFixture, "--connect-timeout-seconds",
                                                "10", "--reconnect-seconds", "0"}),
                g.Log("extra_worker"));
  ASSERT_TRUE(WaitFor([&] { return !extra.running(); }, 30));
  EXPECT_THAT(extra.log(), HasSubstr("all 1 ranks are taken"));
  EXPECT_EQ(g.health(), Health::SERVING);
}

}  // namespace
}  // namespace moeserve::testing
