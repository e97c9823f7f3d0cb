// The worker against a real gRPC coordinator on loopback. The coordinator is
// played by the test: a minimal Coordinator service whose handler hands each
// worker stream to the test thread, which sends Welcome and StepPlans (with
// block tables it chooses) and checks the StepResults. The worker runs either
// in this process (Worker::Run on a thread) or as the moeserve-worker binary.
#include "runtime/worker/worker.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <future>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "moeserve/worker/v1/worker.grpc.pb.h"
#include "nlohmann/json.hpp"

extern char** environ;

namespace moeserve {
namespace {

namespace pb = ::moeserve::worker::v1;
using ::testing::HasSubstr;
using ServerStream = grpc::ServerReaderWriter<pb::CoordinatorMessage, pb::WorkerMessage>;
using Clock = std::chrono::steady_clock;

const std::string kFixture = std::string(MOESERVE_FIXTURES_DIR) + "/deepseek_v3_small_bf16";
const std::string kWorkerBinary =
    std::string(MOESERVE_BINARY_DIR) + "/tools/worker/moeserve-worker";

// The worker runs the same float32 CPU arithmetic (same ops, same summation
// order) as tests/runtime/model/deepseek_v3_golden_test.cc, which bounds the
// difference to DeepSeek's reference by 5e-5; moving the work through
// StepPlans changes only the transport, so the same tolerance holds.
constexpr double kLogprobTolerance = 5e-5;
// Greedy tokens are compared where the reference's top-2 margin leaves no
// doubt about the winner under that tolerance.
constexpr double kGreedyMargin = 0.1;

// A coordinator for tests: accepts worker streams one at a time and lends
// each to the test thread until the test ends the call or the worker cancels.
class TestCoordinator final : public pb::Coordinator::Service {
 public:
  TestCoordinator() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~TestCoordinator() override {
    Close();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }

  bool started() const { return server_ != nullptr && port_ > 0; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  // The next worker stream, or null when none connects within `timeout`.
  ServerStream* AwaitWorker(std::chrono::seconds timeout) {
    std::unique_lock lock(mu_);
    const int seen = connections_taken_;
    if (!cv_.wait_for(lock, timeout, [&] { return connections_ > seen && stream_ != nullptr; })) {
      return nullptr;
    }
    connections_taken_ = connections_;
    return stream_;
  }

  // Lets the current call end with `status`.
  void EndCall(grpc::Status status) {
    std::lock_guard lock(mu_);
    end_status_ = std::move(status);
    end_ = true;
    cv_.notify_all();
  }

  // Ends the current call and every later one at once (CANCELLED), so that
  // no worker waits on this coordinator any more.
  void Close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    cv_.notify_all();
  }

  grpc::Status Connect(grpc::ServerContext* context, ServerStream* stream) override {
    std::unique_lock lock(mu_);
    if (closed_) return grpc::Status::CANCELLED;
    stream_ = stream;
    end_ = false;
    ++connections_;
    cv_.notify_all();
    while (!end_ && !closed_ && !context->IsCancelled()) {
      cv_.wait_for(lock, std::chrono::milliseconds(20));
    }
    stream_ = nullptr;
    return closed_ ? grpc::Status::CANCELLED : end_status_;
  }

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::mutex mu_;
  std::condition_variable cv_;
  ServerStream* stream_ = nullptr;  // the call in progress, lent to the test thread
  int connections_ = 0;             // calls accepted so far
  int connections_taken_ = 0;       // calls handed to the test
  bool end_ = false;                // the test let the current call end ...
  grpc::Status end_status_;         // ... with this status
  bool closed_ = false;             // every call ends at once
};

struct Golden {
  std::vector<uint32_t> prompt;
  std::vector<double> prompt_logprobs;  // of prompt[i + 1] after prompt[0..i]
  std::vector<uint32_t> greedy;         // the leading tokens whose margin is clear
  std::vector<double> greedy_logprobs;
};

Golden ReadGolden() {
  std::ifstream in(kFixture + "/golden.json");
  EXPECT_TRUE(in.good()) << "cannot read " << kFixture << "/golden.json";
  const nlohmann::json c = nlohmann::json::parse(in).at("cases")[0];
  Golden g;
  g.prompt = c.at("prompt_ids").get<std::vector<uint32_t>>();
  for (size_t i = 0; i + 1 < g.prompt.size(); ++i) {
    g.prompt_logprobs.push_back(c.at("positions")[i].at("next_logprob").get<double>());
  }
  for (const auto& t : c.at("greedy")) {
    if (t.at("margin").get<double>() <= kGreedyMargin) break;
    g.greedy.push_back(t.at("id").get<uint32_t>());
    g.greedy_logprobs.push_back(t.at("logprob").get<double>());
  }
  return g;
}

int64_t VocabSize() {
  std::ifstream in(kFixture + "/config.json");
  return nlohmann::json::parse(in).at("vocab_size").get<int64_t>();
}

pb::StepPlan Plan(uint64_t step, uint32_t rank = 0, uint32_t world_size = 1) {
  pb::StepPlan plan;
  plan.set_step(step);
  plan.set_rank(rank);
  plan.set_world_size(world_size);
  return plan;
}

// Greedy work for one sequence, with the sampling a coordinator fills in.
pb::SequenceWork* AddGreedyWork(pb::StepPlan& plan, uint64_t sequence_id,
                                const std::vector<uint32_t>& tokens, uint32_t context_len,
                                const std::vector<uint32_t>& block_table) {
  pb::SequenceWork* w = plan.add_sequences();
  w->set_sequence_id(sequence_id);
  for (uint32_t t : tokens) w->add_token_ids(t);
  w->set_context_len(context_len);
  for (uint32_t b : block_table) w->add_block_table(b);
  w->set_sample(true);
  w->mutable_sampling()->set_temperature(0.0f);
  w->mutable_sampling()->set_top_p(1.0f);
  return w;
}

bool Send(ServerStream* stream, const pb::CoordinatorMessage& message) {
  return stream->Write(message);
}

// Sends Welcome and waits for the worker's Ready (it loads its weights then).
bool SendWelcome(ServerStream* stream, uint32_t rank, uint32_t world_size) {
  pb::CoordinatorMessage m;
  m.mutable_welcome()->set_rank(rank);
  m.mutable_welcome()->set_world_size(world_size);
  if (!Send(stream, m)) return false;
  pb::WorkerMessage ready;
  if (!stream->Read(&ready) || !ready.has_ready()) {
    ADD_FAILURE() << "no Ready after Welcome: " << ready.DebugString();
    return false;
  }
  EXPECT_EQ(ready.ready().error(), "");
  return ready.ready().error().empty();
}

bool SendShutdown(ServerStream* stream, const std::string& reason) {
  pb::CoordinatorMessage m;
  m.mutable_shutdown()->set_reason(reason);
  return Send(stream, m);
}

// Sends the plan and returns the worker's answer to it.
std::optional<pb::StepResult> RunStep(ServerStream* stream, const pb::StepPlan& plan) {
  pb::CoordinatorMessage m;
  *m.mutable_step_plan() = plan;
  if (!stream->Write(m)) return std::nullopt;
  pb::WorkerMessage reply;
  if (!stream->Read(&reply) || !reply.has_step_result()) return std::nullopt;
  return reply.step_result();
}

std::optional<pb::Register> ReadRegister(ServerStream* stream) {
  pb::WorkerMessage m;
  if (!stream->Read(&m) || !m.has_register_()) return std::nullopt;
  return m.register_();
}

// A worker in this process, serving on its own thread.
class InProcessWorker {
 public:
  // `coordinator` (the one the options name, or null) must outlive this.
  InProcessWorker(Worker::Options options, TestCoordinator* coordinator)
      : coordinator_(coordinator) {
    options.log = [this](const std::string& line) {
      std::lock_guard lock(mu_);
      log_.push_back(line);
    };
    auto worker = Worker::Create(options);
    EXPECT_TRUE(worker.ok()) << worker.status();
    if (worker.ok()) worker_ = *std::move(worker);
  }
  // Ends a Run still in progress (a failed test) by closing the coordinator.
  ~InProcessWorker() {
    if (coordinator_ != nullptr) coordinator_->Close();
    if (run_.valid()) run_.wait();
  }

  bool loaded() const { return worker_ != nullptr; }
  void Start() {
    run_ = std::async(std::launch::async, [this] { return worker_->Run(); });
  }
  // Run's result, or nullopt if it has not returned within `timeout`.
  std::optional<absl::Status> Await(std::chrono::seconds timeout) {
    if (run_.wait_for(timeout) != std::future_status::ready) return std::nullopt;
    return run_.get();
  }
  std::string log() {
    std::lock_guard lock(mu_);
    std::string all;
    for (const std::string& l : log_) all += l + "\n";
    return all;
  }

 private:
  TestCoordinator* coordinator_;
  std::unique_ptr<Worker> worker_;
  std::future<absl::Status> run_;
  std::mutex mu_;
  std::vector<std::string> log_;
};

Worker::Options TestOptions(const std::string& address) {
  Worker::Options o;
  o.coordinator_address = address;
  o.model_dir = kFixture;
  o.kv_cache_tokens = 64;
  o.kv_block_tokens = 4;  // small blocks, so that sequences span several
  o.worker_id = "worker-under-test";
  return o;
}

// A TCP port on loopback where nothing listens while the returned socket is
// open: bound, so no one else takes it, but never listening, so connecting
// is refused.
struct DeadPort {
  DeadPort() {
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (fd >= 0 && bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port = ntohs(addr.sin_port);
    }
  }
  ~DeadPort() {
    if (fd >= 0) close(fd);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port); }
  int fd = -1;
  int port = 0;
};

TEST(WorkerTest, GreedyTokensThroughStepPlansMatchTheReference) {
  const Golden golden = ReadGolden();
  ASSERT_GE(golden.greedy.size(), 4u);
  const auto vocab = static_cast<uint32_t>(VocabSize());
  TestCoordinator coordinator;
  ASSERT_TRUE(coordinator.started());
  Worker::Options options = TestOptions(coordinator.address());
  options.requested_rank = 0;
  InProcessWorker worker(options, &coordinator);
  ASSERT_TRUE(worker.loaded());
  worker.Start();
  ServerStream* stream = coordinator.AwaitWorker(std::chrono::seconds(30));
  ASSERT_NE(stream, nullptr) << "the worker did not connect";

  const std::optional<pb::Register> reg = ReadRegister(stream);
  ASSERT_TRUE(reg.has_value()) << "the worker's first message must be Register";
  EXPECT_EQ(reg->worker_id(), "worker-under-test");
  EXPECT_EQ(reg->requested_rank(), 0);
  EXPECT_EQ(reg->kv().num_blocks(), 16u);
  EXPECT_EQ(reg->kv().block_tokens(), 4u);
  EXPECT_EQ(reg->model_type(), "deepseek_v3");
  EXPECT_EQ(reg->vocab_size(), vocab);
  EXPECT_EQ(reg->model().model_type(), "deepseek_v3");
  EXPECT_EQ(reg->model().model_name(), "deepseek_v3_small_bf16");
  EXPECT_EQ(reg->model().vocab_size(), vocab);
  EXPECT_GT(reg->model().max_context_tokens(), 0u);
  ASSERT_TRUE(SendWelcome(stream, 0, 1)) << worker.log();

  // Blocks of 4 tokens, out of order: prompt (6) + generated tokens fit 4.
  const std::vector<uint32_t> blocks = {6, 1, 4, 2};
  ASSERT_LE(golden.prompt.size() + golden.greedy.size(), 4 * blocks.size());
  constexpr uint64_t kSeq = 17;
  uint64_t step = 100;

  pb::StepPlan prefill = Plan(++step);
  pb::SequenceWork* w = AddGreedyWork(prefill, kSeq, golden.prompt,
                                      static_cast<uint32_t>(golden.prompt.size()), blocks);
  w->set_prompt_logprobs(true);
  w->set_logprobs(5);
  std::optional<pb::StepResult> r = RunStep(stream, prefill);
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(r->error(), "");
  EXPECT_EQ(r->step(), step);
  EXPECT_EQ(r->rank(), 0u);
  EXPECT_GT(r->step_seconds(), 0.0);
  ASSERT_EQ(r->outputs_size(), 1);
  const pb::SequenceOutput& first = r->outputs(0);
  EXPECT_EQ(first.sequence_id(), kSeq);
  ASSERT_EQ(first.prompt_logprobs_size(), static_cast<int>(golden.prompt_logprobs.size()));
  for (size_t i = 0; i < golden.prompt_logprobs.size(); ++i) {
    EXPECT_NEAR(first.prompt_logprobs(static_cast<int>(i)), golden.prompt_logprobs[i],
                kLogprobTolerance)
        << "prompt position " << i;
  }
  ASSERT_EQ(first.top_size(), 5);
  EXPECT_EQ(first.top(0).id(), first.token_id());

  std::vector<uint32_t> generated = {first.token_id()};
  std::vector<float> logprobs = {first.logprob()};
  while (generated.size() < golden.greedy.size()) {
    const auto context = static_cast<uint32_t>(golden.prompt.size() + generated.size());
    if (generated.size() == 2) {
      // A token outside the vocabulary: the sequence is refused, the step
      // goes on, and nothing else changes (the sequence continues below).
      pb::StepPlan bad = Plan(++step);
      AddGreedyWork(bad, kSeq, {vocab}, context, blocks);
      r = RunStep(stream, bad);
      ASSERT_TRUE(r.has_value());
      EXPECT_EQ(r->step(), step);
      EXPECT_EQ(r->error(), "");
      ASSERT_EQ(r->outputs_size(), 1);
      EXPECT_THAT(r->outputs(0).error(), HasSubstr("outside the vocabulary"));
    }
    if (generated.size() == 3) {
      // A rank with no sequences still answers its step.
      r = RunStep(stream, Plan(++step));
      ASSERT_TRUE(r.has_value());
      EXPECT_EQ(r->step(), step);
      EXPECT_EQ(r->error(), "");
      EXPECT_EQ(r->outputs_size(), 0);
    }
    pb::StepPlan decode = Plan(++step);
    pb::SequenceWork* d = AddGreedyWork(decode, kSeq, {generated.back()}, context, blocks);
    d->set_draw_index(generated.size());
    if (generated.size() % 2 == 1) {
      // As the coordinator sends a sequence the worker holds: no block
      // table (nothing appended), no sampling.
      d->clear_block_table();
      d->clear_sampling();
      d->set_continued(true);
      d->set_block_table_length(static_cast<uint32_t>(blocks.size()));
    }
    r = RunStep(stream, decode);
    ASSERT_TRUE(r.has_value());
    ASSERT_EQ(r->error(), "") << "decode step " << step;
    ASSERT_EQ(r->outputs_size(), 1);
    EXPECT_EQ(r->outputs(0).prompt_logprobs_size(), 0);
    generated.push_back(r->outputs(0).token_id());
    logprobs.push_back(r->outputs(0).logprob());
  }
  EXPECT_EQ(generated, golden.greedy);
  for (size_t i = 0; i < generated.size(); ++i) {
    EXPECT_NEAR(logprobs[i], golden.greedy_logprobs[i], kLogprobTolerance) << "token " << i;
  }

  ASSERT_TRUE(SendShutdown(stream, "test done"));
  const std::optional<absl::Status> status = worker.Await(std::chrono::seconds(10));
  ASSERT_TRUE(status.has_value()) << "Shutdown must end Run";
  EXPECT_TRUE(status->ok()) << *status;
  coordinator.EndCall(grpc::Status::OK);
  const std::string log = worker.log();
  EXPECT_THAT(log, HasSubstr("registered as rank 0 of 1"));
  EXPECT_THAT(log, HasSubstr("step 103: sequence 17 refused"));
  EXPECT_THAT(log, HasSubstr("shutdown: test done"));
}

TEST(WorkerTest, MalformedPlansAreAnsweredWithErrorsAndServingGoesOn) {
  TestCoordinator coordinator;
  ASSERT_TRUE(coordinator.started());
  InProcessWorker worker(TestOptions(coordinator.address()), &coordinator);
  ASSERT_TRUE(worker.loaded());
  worker.Start();
  ServerStream* stream = coordinator.AwaitWorker(std::chrono::seconds(30));
  ASSERT_NE(stream, nullptr);
  ASSERT_TRUE(ReadRegister(stream).has_value());
  ASSERT_TRUE(SendWelcome(stream, 0, 1));

  struct Expect {
    pb::StepPlan plan;
    const char* error;  // empty: the step succeeds
    // With a successful step: the error of the refused sequence 9, whose
    // work is malformed (empty: no sequence is refused).
    const char* refused = "";
  };
  std::vector<Expect> script;
  script.push_back({Plan(1, 1, 2), "addressed to rank 1 of 2, but this worker is rank 0 of 1"});
  script.push_back({Plan(2, 0, 1), ""});
  script.push_back({Plan(2, 0, 1), "step 2 does not follow the last step answered, 2"});
  script.push_back({Plan(3, 0, 3), "rank 0 of 3"});
  // Penalties on a sequence whose earlier tokens this worker never saw,
  // beside a good sequence: refused alone.
  pb::StepPlan penalty = Plan(4, 0, 1);
  AddGreedyWork(penalty, 9, {5, 6}, 4, {0})->mutable_sampling()->set_presence_penalty(0.5f);
  AddGreedyWork(penalty, 1, {5, 6}, 2, {1});
  script.push_back({penalty, "", "penalties need the tokens before position 2"});
  pb::StepPlan short_table = Plan(5, 0, 1);
  AddGreedyWork(short_table, 9, {5, 6, 7, 8, 9}, 5, {0});  // 5 tokens need 2 blocks of 4
  script.push_back({short_table, "", "INVALID_ARGUMENT"});
  pb::StepPlan bad_token = Plan(6, 0, 1);
  AddGreedyWork(bad_token, 2, {5, 6}, 2, {2});
  AddGreedyWork(bad_token, 9, {5, 100000}, 2, {3});  // outside the vocabulary
  script.push_back({bad_token, "", "outside the vocabulary"});
  pb::StepPlan no_sampling = Plan(7, 0, 1);
  AddGreedyWork(no_sampling, 1, {5, 6}, 2, {0})->set_sample(false);
  no_sampling.mutable_sequences(0)->clear_sampling();
  script.push_back({no_sampling, ""});

  for (const Expect& e : script) {
    const std::optional<pb::StepResult> r = RunStep(stream, e.plan);
    ASSERT_TRUE(r.has_value()) << "step " << e.plan.step();
    EXPECT_EQ(r->step(), e.plan.step());
    EXPECT_EQ(r->rank(), 0u);
    if (std::string(e.error).empty()) {
      EXPECT_EQ(r->error(), "") << "step " << e.plan.step();
      EXPECT_EQ(r->outputs_size(), e.plan.sequences_size());
      for (const pb::SequenceOutput& out : r->outputs()) {
        if (out.sequence_id() == 9 && !std::string(e.refused).empty()) {
          EXPECT_THAT(out.error(), HasSubstr(e.refused)) << "step " << e.plan.step();
        } else {
          EXPECT_EQ(out.error(), "") << "step " << e.plan.step();
        }
      }
    } else {
      EXPECT_THAT(r->error(), HasSubstr(e.error)) << "step " << e.plan.step();
      EXPECT_EQ(r->outputs_size(), 0);
    }
  }

  // Closing the stream without Shutdown is a lost coordinator.
  coordinator.EndCall(grpc::Status::OK);
  const std::optional<absl::Status> status = worker.Await(std::chrono::seconds(10));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->code(), absl::StatusCode::kUnavailable) << *status;
  EXPECT_THAT(std::string(status->message()), HasSubstr("closed the stream without Shutdown"));
}

// Random and adversarial plans, as a confused or hostile coordinator could
// send them: tokens and block ids out of range, contexts that do not match
// the tokens, continued sequences the worker never held, sampling values
// out of range or NaN, stale and jumping step numbers. Every plan is
// answered (an error for the step or for one sequence), the worker stays
// up, and a good step afterwards gives the token it gave before them.
TEST(WorkerTest, RandomAndAdversarialPlansAreAnsweredAndNeverTakeTheWorkerDown) {
  TestCoordinator coordinator;
  ASSERT_TRUE(coordinator.started());
  InProcessWorker worker(TestOptions(coordinator.address()), &coordinator);
  ASSERT_TRUE(worker.loaded());
  worker.Start();
  ServerStream* stream = coordinator.AwaitWorker(std::chrono::seconds(30));
  ASSERT_NE(stream, nullptr);
  ASSERT_TRUE(ReadRegister(stream).has_value());
  ASSERT_TRUE(SendWelcome(stream, 0, 1));
  const auto vocab = static_cast<uint64_t>(VocabSize());

  // One good prefill of a sequence sent in full; the worker replaces what it
  // held of it, so the same plan gives the same token whatever came before.
  uint64_t step = 1;
  auto good = [&] {
    pb::StepPlan p = Plan(step++);
    AddGreedyWork(p, 1000, {3, 1, 4, 1, 5}, 5, {14, 15});
    return p;
  };
  const std::optional<pb::StepResult> before = RunStep(stream, good());
  ASSERT_TRUE(before.has_value());
  ASSERT_EQ(before->error(), "");
  ASSERT_EQ(before->outputs_size(), 1);
  const uint32_t token = before->outputs(0).token_id();

  std::mt19937_64 rng(20261207);
  auto pick = [&](uint64_t n) { return n == 0 ? 0 : rng() % n; };
  auto chance = [&](uint64_t percent) { return pick(100) < percent; };
  auto number = [&] {  // a float, sometimes one no sampler should accept
    switch (pick(12)) {
      case 0:
        return std::numeric_limits<float>::quiet_NaN();
      case 1:
        return std::numeric_limits<float>::infinity();
      case 2:
        return -1.0f;
      case 3:
        return 1e30f;
      default:
        return static_cast<float>(pick(2000)) / 1000.0f;
    }
  };
  int step_errors = 0, sequence_errors = 0, clean = 0;
  for (int i = 0; i < 400; ++i) {
    // Mostly the next step; sometimes a stale one, a jump, or another rank.
    const uint64_t n =
        chance(8) && step > 4 ? step - 1 - pick(3) : (step += chance(5) ? pick(1000) : 0);
    pb::StepPlan p = Plan(n, chance(95) ? 0 : static_cast<uint32_t>(pick(4)),
                          chance(95) ? 1 : static_cast<uint32_t>(pick(4)));
    if (chance(20)) p.set_group_max_tokens(static_cast<uint32_t>(chance(50) ? pick(64) : rng()));
    const uint64_t sequences = pick(5);
    for (uint64_t q = 0; q < sequences; ++q) {
      pb::SequenceWork* w = p.add_sequences();
      w->set_sequence_id(chance(85) ? pick(8) : rng());
      const uint64_t fed = chance(5) ? pick(300) : 1 + pick(8);
      for (uint64_t t = 0; t < fed; ++t) {
        w->add_token_ids(static_cast<uint32_t>(chance(97) ? pick(vocab) : rng()));
      }
      w->set_context_len(static_cast<uint32_t>(chance(80) ? fed + pick(8) : rng()));
      const uint64_t blocks = chance(5) ? pick(40) : 1 + pick(4);
      for (uint64_t b = 0; b < blocks; ++b) {
        w->add_block_table(static_cast<uint32_t>(chance(95) ? pick(16) : rng()));
      }
      w->set_sample(chance(70));
      if (chance(85)) {
        pb::Sampling* sp = w->mutable_sampling();
        sp->set_temperature(number());
        sp->set_top_p(number());
        sp->set_top_k(chance(90) ? static_cast<int32_t>(pick(50)) : -static_cast<int32_t>(pick(9)));
        sp->set_min_p(number());
        if (chance(20)) sp->set_repetition_penalty(number());
        if (chance(20)) sp->set_presence_penalty(number());
        if (chance(20)) sp->set_frequency_penalty(number());
        sp->set_seed(rng());
        const uint64_t biases = chance(80) ? 0 : pick(6);
        for (uint64_t b = 0; b < biases; ++b) {
          sp->add_logit_bias_ids(static_cast<uint32_t>(chance(90) ? pick(vocab) : rng()));
          if (chance(90)) sp->add_logit_bias_values(number());
        }
      }
      w->set_draw_index(rng());
      w->set_logprobs(static_cast<uint32_t>(chance(90) ? pick(21) : rng()));
      w->set_prompt_logprobs(chance(20));
      if (chance(20))
        w->set_following_token(static_cast<uint32_t>(chance(80) ? pick(vocab) : rng()));
      w->set_prompt_tokens(static_cast<uint32_t>(pick(fed + 2)));
      if (chance(10)) {
        for (uint64_t h = pick(12); h > 0; --h) {
          w->add_history_token_ids(static_cast<uint32_t>(chance(95) ? pick(vocab) : rng()));
        }
      }
      if (chance(20)) {
        w->set_continued(true);
        w->set_block_table_length(static_cast<uint32_t>(pick(10)));
      }
    }
    for (uint64_t r = chance(20) ? pick(4) : 0; r > 0; --r) p.add_released_sequences(pick(8));

    const std::optional<pb::StepResult> r = RunStep(stream, p);
    ASSERT_TRUE(r.has_value()) << "no answer to plan " << i << " (" << p.ShortDebugString()
                               << "):\n"
                               << worker.log();
    EXPECT_EQ(r->step(), p.step());
    if (!r->error().empty()) {
      ++step_errors;
      EXPECT_EQ(r->outputs_size(), 0);
      continue;
    }
    step = std::max(step, p.step() + 1);
    EXPECT_EQ(r->outputs_size(), p.sequences_size()) << "plan " << i;
    for (const pb::SequenceOutput& out : r->outputs()) {
      if (!out.error().empty()) {
        ++sequence_errors;
      } else if (out.token_id() >= vocab) {
        ADD_FAILURE() << "plan " << i << " sampled token " << out.token_id();
      }
    }
    clean += r->outputs_size() > 0 ? 1 : 0;
  }
  // The plans were adversarial enough to be refused both ways, and ordinary
  // enough that some ran.
  EXPECT_GT(step_errors, 10);
  EXPECT_GT(sequence_errors, 10);
  EXPECT_GT(clean, 10);

  step += 2000;  // past any step a refused plan may have counted as answered
  const std::optional<pb::StepResult> after = RunStep(stream, good());
  ASSERT_TRUE(after.has_value()) << worker.log();
  ASSERT_EQ(after->error(), "");
  ASSERT_EQ(after->outputs_size(), 1);
  EXPECT_EQ(after->outputs(0).error(), "");
  EXPECT_EQ(after->outputs(0).token_id(), token);
  ASSERT_TRUE(SendShutdown(stream, "done"));
  const std::optional<absl::Status> status = worker.Await(std::chrono::seconds(10));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(status->ok()) << *status;
}

TEST(WorkerTest, RejectedRegistrationEndsRunWithTheCoordinatorsReason) {
  TestCoordinator coordinator;
  ASSERT_TRUE(coordinator.started());
  InProcessWorker worker(TestOptions(coordinator.address()), &coordinator);
  ASSERT_TRUE(worker.loaded());
  worker.Start();
  ServerStream* stream = coordinator.AwaitWorker(std::chrono::seconds(30));
  ASSERT_NE(stream, nullptr);
  ASSERT_TRUE(ReadRegister(stream).has_value());
  coordinator.EndCall(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                   "model deepseek_v3 does not match qwen3_moe"));
  const std::optional<absl::Status> status = worker.Await(std::chrono::seconds(10));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->code(), absl::StatusCode::kUnavailable) << *status;
  EXPECT_THAT(std::string(status->message()),
              HasSubstr("model deepseek_v3 does not match qwen3_moe"));
}

TEST(WorkerTest, PlanBeforeWelcomeIsAProtocolError) {
  TestCoordinator coordinator;
  ASSERT_TRUE(coordinator.started());
  InProcessWorker worker(TestOptions(coordinator.address()), &coordinator);
  ASSERT_TRUE(worker.loaded());
  worker.Start();
  ServerStream* stream = coordinator.AwaitWorker(std::chrono::seconds(30));
  ASSERT_NE(stream, nullptr);
  ASSERT_TRUE(ReadRegister(stream).has_value());
  pb::CoordinatorMessage m;
  *m.mutable_step_plan() = Plan(1);
  ASSERT_TRUE(stream->Write(m));
  const std::optional<absl::Status> status = worker.Await(std::chrono::seconds(10));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->code(), absl::StatusCode::kFailedPrecondition) << *status;
  EXPECT_THAT(std::string(status->message()), HasSubstr("sent a step plan before Welcome"));
}

TEST(WorkerTest, NoCoordinatorFailsWithinTheConnectTimeout) {
  DeadPort dead;
  ASSERT_GT(dead.port, 0);
  Worker::Options options = TestOptions(dead.address());
  options.connect_timeout = std::chrono::milliseconds(500);
  InProcessWorker worker(options, nullptr);
  ASSERT_TRUE(worker.loaded());
  const auto start = Clock::now();
  worker.Start();
  const std::optional<absl::Status> status = worker.Await(std::chrono::seconds(10));
  ASSERT_TRUE(status.has_value());
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(status->code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(status->message()),
              HasSubstr("cannot connect to the coordinator at " + dead.address()));
}

TEST(WorkerTest, BadOptionsAreRejected) {
  Worker::Options options = TestOptions("127.0.0.1:1");
  options.kv_cache_tokens = 0;
  EXPECT_EQ(Worker::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = TestOptions("");
  EXPECT_EQ(Worker::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = TestOptions("127.0.0.1:1");
  options.requested_rank = -2;
  EXPECT_EQ(Worker::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = TestOptions("127.0.0.1:1");
  options.model_dir = "/nonexistent/model";
  EXPECT_FALSE(Worker::Create(options).ok());
}

// --- the moeserve-worker binary ---------------------------------------------

// A moeserve-worker process, its stdout and stderr going to a file.
class WorkerProcess {
 public:
  explicit WorkerProcess(const std::vector<std::string>& flags)
      : output_path_(::testing::TempDir() + "/moeserve_worker_" + std::to_string(getpid()) + "_" +
                     std::to_string(counter_++) + ".log") {
    std::vector<std::string> args = {kWorkerBinary};
    args.insert(args.end(), flags.begin(), flags.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, output_path_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    if (posix_spawn(&pid_, kWorkerBinary.c_str(), &actions, nullptr, argv.data(), environ) != 0) {
      pid_ = -1;
    }
    posix_spawn_file_actions_destroy(&actions);
  }
  ~WorkerProcess() {
    if (pid_ > 0 && !exit_code_.has_value()) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    std::remove(output_path_.c_str());  // failures have shown it already
  }

  bool started() const { return pid_ > 0; }
  // The exit code, or nullopt if it is still running after `timeout`
  // (or was killed by a signal).
  std::optional<int> Wait(std::chrono::seconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (!exit_code_.has_value()) {
      int status = 0;
      const pid_t done = waitpid(pid_, &status, WNOHANG);
      if (done == pid_) {
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      } else if (done < 0 || Clock::now() > deadline) {
        return std::nullopt;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    return exit_code_;
  }
  std::string output() const {
    std::ifstream in(output_path_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  static inline int counter_ = 0;
  std::string output_path_;
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

TEST(WorkerBinaryTest, ServesAStepAndExitsZeroOnShutdown) {
  const Golden golden = ReadGolden();
  TestCoordinator coordinator;
  ASSERT_TRUE(coordinator.started());
  WorkerProcess worker({"--coordinator", coordinator.address(), "--model", kFixture,
                        "--kv-cache-tokens", "1000", "--worker-id", "binary-worker", "--rank",
                        "0"});
  ASSERT_TRUE(worker.started());
  ServerStream* stream = coordinator.AwaitWorker(std::chrono::seconds(60));
  ASSERT_NE(stream, nullptr) << worker.output();
  const std::optional<pb::Register> reg = ReadRegister(stream);
  ASSERT_TRUE(reg.has_value());
  EXPECT_EQ(reg->worker_id(), "binary-worker");
  EXPECT_EQ(reg->requested_rank(), 0);
  EXPECT_EQ(reg->kv().num_blocks(), 16u);  // 1000 tokens in blocks of 64
  EXPECT_EQ(reg->kv().block_tokens(), 64u);
  ASSERT_TRUE(SendWelcome(stream, 0, 1));

  pb::StepPlan prefill = Plan(1);
  AddGreedyWork(prefill, 3, golden.prompt, static_cast<uint32_t>(golden.prompt.size()), {9});
  const std::optional<pb::StepResult> r = RunStep(stream, prefill);
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(r->error(), "");
  ASSERT_EQ(r->outputs_size(), 1);
  EXPECT_EQ(r->outputs(0).token_id(), golden.greedy[0]);
  EXPECT_NEAR(r->outputs(0).logprob(), golden.greedy_logprobs[0], kLogprobTolerance);

  ASSERT_TRUE(SendShutdown(stream, "scale down"));
  const std::optional<int> code = worker.Wait(std::chrono::seconds(15));
  coordinator.EndCall(grpc::Status::OK);
  ASSERT_TRUE(code.has_value()) << "moeserve-worker did not exit after Shutdown";
  EXPECT_EQ(*code, 0) << worker.output();
  EXPECT_THAT(worker.output(), HasSubstr("moeserve-worker: registered as rank 0 of 1"));
  EXPECT_THAT(worker.output(), HasSubstr("moeserve-worker: shutdown: scale down"));
}

TEST(WorkerBinaryTest, NothingListeningFailsWithAClearMessageWithinSeconds) {
  DeadPort dead;
  ASSERT_GT(dead.port, 0);
  const auto start = Clock::now();
  WorkerProcess worker({"--coordinator", dead.address(), "--model", kFixture});
  ASSERT_TRUE(worker.started());
  const std::optional<int> code = worker.Wait(std::chrono::seconds(30));
  const auto elapsed = Clock::now() - start;
  ASSERT_TRUE(code.has_value()) << "moeserve-worker kept waiting for a coordinator";
  EXPECT_EQ(*code, 1) << worker.output();
  EXPECT_LT(elapsed, std::chrono::seconds(15)) << "the default connect timeout is 5 s";
  EXPECT_THAT(worker.output(), HasSubstr("moeserve-worker: cannot connect to the coordinator at " +
                                         dead.address() + " within 5 s"));
}

TEST(WorkerBinaryTest, FlagsAreCheckedAndExplained) {
  struct Case {
    std::vector<std::string> flags;
    int exit_code;
    const char* output;
  };
  const Case cases[] = {
      {{"--help"}, 0, "Usage: moeserve-worker --coordinator ADDR --model DIR"},
      {{"--model", kFixture}, 2, "moeserve-worker: --coordinator is required"},
      {{"--coordinator", "127.0.0.1:1"}, 2, "moeserve-worker: --model is required"},
      {{"--coordinator", "127.0.0.1:1", "--model", kFixture, "--kv-cache-tokens", "0"},
       2,
       "moeserve-worker: --kv-cache-tokens must be positive"},
      {{"--coordinator", "127.0.0.1:1", "--model", kFixture, "--kv-cache-dtype", "fp16"},
       2,
       "moeserve-worker: --kv-cache-dtype must be one of auto, fp32, bf16, fp8, got \"fp16\""},
      {{"--coordinator", "127.0.0.1:1", "--model", kFixture, "--rank", "-3"},
       2,
       "moeserve-worker: --rank must be -1"},
      {{"--coordinator", "127.0.0.1:1", "--model", kFixture, "--port", "5"},
       2,
       "moeserve-worker: unknown flag --port"},
      {{"--coordinator", "127.0.0.1:1", "--model", "/nonexistent/model"},
       1,
       "moeserve-worker: cannot load the model from /nonexistent/model"},
  };
  for (const Case& c : cases) {
    WorkerProcess worker(c.flags);
    ASSERT_TRUE(worker.started());
    const std::optional<int> code = worker.Wait(std::chrono::seconds(30));
    ASSERT_TRUE(code.has_value());
    EXPECT_EQ(*code, c.exit_code) << c.output << "\n" << worker.output();
    EXPECT_THAT(worker.output(), HasSubstr(c.output));
  }
}

}  // namespace
}  // namespace moeserve
