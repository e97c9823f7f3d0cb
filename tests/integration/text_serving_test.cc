// Text in the service end to end, with real processes on loopback: a
// moeserve-coordinator started with --tokenizer and a moeserve-worker serving
// tiny checkpoints that `moeserve make-tiny-model` writes with the published
// DeepSeek-V3 and Qwen3 tokenizer files. Text prompts, Tokenize, streamed
// text, stop strings, Chat with the models' templates, UTF-8 errors, and a
// coordinator without (or with a mismatched) tokenizer.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "moeserve/v1/admin.grpc.pb.h"
#include "moeserve/v1/inference.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "scheduler/tokenizer/tokenizer.h"
#include "tests/integration/process.h"

namespace moeserve::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kBin = MOESERVE_BINARY_DIR;

const std::string& ScratchDir() { return ProcessScratchDir("text_serving"); }

// A tiny checkpoint of `arch` with the published tokenizer files, once per process.
std::string TinyModel(const std::string& arch) {
  const std::string dir = ScratchDir() + "/" + arch;
  if (!fs::exists(dir + "/tokenizer.json")) {
    const CommandResult made =
        RunCommand(kBin + "/tools/moeserve/moeserve make-tiny-model --arch " + arch +
                   " --dtype bf16 --shards 1 --out " + dir + " 2>&1");
    EXPECT_EQ(made.exit_code, 0) << made.out;
  }
  return dir;
}

struct Stream {
  std::vector<int32_t> tokens;
  std::vector<std::string> deltas;  // text_delta of every chunk
  std::string text;                 // all of them joined
  std::vector<v1::GeneratedTokenLogprobs> logprobs;
  bool has_final = false;
  v1::Final final;
  grpc::Status status;
};

Stream Read(grpc::ClientReader<v1::GenerateResponse>& reader) {
  Stream s;
  v1::GenerateResponse r;
  while (reader.Read(&r)) {
    if (r.has_chunk()) {
      for (uint32_t id : r.chunk().token_ids()) s.tokens.push_back(static_cast<int32_t>(id));
      s.deltas.push_back(r.chunk().text_delta());
      s.text += r.chunk().text_delta();
      s.logprobs.insert(s.logprobs.end(), r.chunk().logprobs().begin(), r.chunk().logprobs().end());
    }
    if (r.has_final()) {
      s.has_final = true;
      s.final = r.final();
    }
  }
  s.status = reader.Finish();
  return s;
}

Stream Generate(v1::Inference::Stub& stub, const v1::GenerateRequest& request) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  return Read(*stub.Generate(&ctx, request));
}

Stream Chat(v1::Inference::Stub& stub, const v1::ChatRequest& request) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  return Read(*stub.Chat(&ctx, request));
}

// Greedy, ignoring end-of-sequence, so that runs are comparable.
void Greedy(v1::SamplingParams* sampling, v1::StoppingCriteria* stopping, uint32_t max_tokens) {
  sampling->set_temperature(0.0f);
  stopping->set_max_tokens(max_tokens);
  stopping->set_ignore_eos(true);
}

v1::GenerateRequest TextRequest(const std::string& text, uint32_t max_tokens) {
  v1::GenerateRequest r;
  r.set_text(text);
  Greedy(r.mutable_sampling(), r.mutable_stopping(), max_tokens);
  return r;
}

v1::GenerateRequest IdsRequest(const std::vector<int32_t>& ids, uint32_t max_tokens) {
  v1::GenerateRequest r;
  for (int32_t id : ids) r.mutable_token_ids()->add_ids(static_cast<uint32_t>(id));
  Greedy(r.mutable_sampling(), r.mutable_stopping(), max_tokens);
  return r;
}

v1::ChatRequest ChatRequest(const std::vector<std::pair<std::string, std::string>>& messages,
                            uint32_t max_tokens) {
  v1::ChatRequest r;
  for (const auto& [role, content] : messages) {
    v1::ChatMessage* m = r.add_messages();
    m->set_role(role);
    m->set_content(content);
  }
  Greedy(r.mutable_sampling(), r.mutable_stopping(), max_tokens);
  return r;
}

// A coordinator (with `coordinator_flags`) and, when `model` is not empty, a
// worker serving it.
class Deployment {
 public:
  Deployment(const std::string& name, const std::vector<std::string>& coordinator_flags,
             const std::string& model)
      : planes_(name), metrics_port_(FreePort()) {
    std::vector<std::string> flags =
        Flags(planes_.CoordinatorFlags(), {"--metrics-port", std::to_string(metrics_port_)});
    flags.insert(flags.end(), coordinator_flags.begin(), coordinator_flags.end());
    coordinator_ = std::make_unique<Process>(kBin + "/tools/coordinator/moeserve-coordinator",
                                             flags, ScratchDir() + "/" + name + "_coordinator.log");
    // Channels (ours and the worker's) are made once the coordinator listens
    // (it loads the tokenizer first): a failed first connection would put
    // them in gRPC's reconnect backoff for seconds.
    listening_ = WaitFor([&] { return Answers(address()); }, 20);
    channel_ = planes_.PublicChannel();
    if (!model.empty() && listening_) worker_ = StartWorker(name, model);
  }

  ~Deployment() {
    channel_.reset();
    if (worker_ != nullptr) worker_->Stop();
    // The coordinator exits within milliseconds of SIGTERM when no client
    // holds a connection; this process still may, and then its shutdown
    // waits for the connection to go. No need to wait for that here.
    coordinator_->Stop(0.5);
  }

  std::unique_ptr<Process> StartWorker(const std::string& name, const std::string& model) {
    return std::make_unique<Process>(
        kBin + "/tools/worker/moeserve-worker",
        Flags(planes_.WorkerFlags(),
              {"--model", model, "--kv-cache-tokens", "4096", "--reconnect-seconds", "0"}),
        ScratchDir() + "/" + name + "_worker.log");
  }

  std::string address() const { return planes_.address(); }
  int metrics_port() const { return metrics_port_; }
  std::string logs() const {
    return coordinator_->log() + (worker_ != nullptr ? worker_->log() : "");
  }
  bool WaitServing() {
    return WaitFor(
        [&] { return HealthOf(channel_) == grpc::health::v1::HealthCheckResponse::SERVING; }, 60);
  }
  bool listening() const { return listening_; }
  std::unique_ptr<v1::Inference::Stub> Inference() { return v1::Inference::NewStub(channel_); }
  v1::ClusterState State() {
    grpc::ClientContext ctx;
    v1::ClusterState state;
    EXPECT_TRUE(v1::Admin::NewStub(planes_.AdminChannel())->GetClusterState(&ctx, {}, &state).ok());
    return state;
  }

 private:
  // Whether a gRPC server answers at `address`, asked on a channel of its
  // own (a local subchannel pool: no backoff shared with later channels). A
  // bare TCP probe would leave the server a handshake to wait for at shutdown.
  static bool Answers(const std::string& address) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return HealthOf(grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args)) !=
           grpc::health::v1::HealthCheckResponse::UNKNOWN;
  }

  Planes planes_;
  int metrics_port_;
  bool listening_ = false;
  std::unique_ptr<Process> coordinator_;
  std::unique_ptr<Process> worker_;
  std::shared_ptr<grpc::Channel> channel_;
};

absl::StatusOr<std::vector<int32_t>> Tokenize(v1::Inference::Stub& stub, const std::string& text,
                                              bool add_special_tokens) {
  grpc::ClientContext ctx;
  v1::TokenizeRequest request;
  request.set_text(text);
  request.set_add_special_tokens(add_special_tokens);
  v1::TokenizeResponse response;
  const grpc::Status s = stub.Tokenize(&ctx, request, &response);
  if (!s.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  }
  return std::vector<int32_t>(response.ids().begin(), response.ids().end());
}

// ---------------------------------------------------------------------------
// A tiny DeepSeek-V3 behind a coordinator with its tokenizer.

class DeepSeekTextTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string model = TinyModel("deepseek_v3");
    deployment_ = new Deployment("deepseek", {"--tokenizer", model}, model);
    ASSERT_TRUE(deployment_->WaitServing()) << deployment_->logs();
    auto tokenizer = Tokenizer::Load(model);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = tokenizer->release();
  }
  static void TearDownTestSuite() {
    delete deployment_;
    delete tokenizer_;
  }

  static inline Deployment* deployment_ = nullptr;
  static inline Tokenizer* tokenizer_ = nullptr;  // the test's own, to check the service's text
};

TEST_F(DeepSeekTextTest, ATextPromptGeneratesAsTheIdsTokenizeGivesForIt) {
  auto stub = deployment_->Inference();
  const std::string prompt = "The capital of France is";
  auto ids = Tokenize(*stub, prompt, /*add_special_tokens=*/true);
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_GT(ids->size(), 2u);
  EXPECT_EQ(ids->front(), tokenizer_->bos_id().value()) << "DeepSeek-V3 adds BOS";
  EXPECT_EQ(std::vector<int32_t>(ids->begin() + 1, ids->end()), *tokenizer_->Encode(prompt, false));

  Stream from_text = Generate(*stub, TextRequest(prompt, 8));
  Stream from_ids = Generate(*stub, IdsRequest(*ids, 8));
  ASSERT_TRUE(from_text.status.ok()) << from_text.status.error_message();
  ASSERT_TRUE(from_ids.status.ok()) << from_ids.status.error_message();
  EXPECT_EQ(from_text.tokens, from_ids.tokens);
  EXPECT_EQ(from_text.text, from_ids.text);
  EXPECT_EQ(from_text.final.usage().prompt_tokens(), ids->size());
  EXPECT_EQ(from_text.final.usage().completion_tokens(), 8u);

  // Token strings on request.
  grpc::ClientContext ctx;
  v1::TokenizeRequest request;
  request.set_text(prompt);
  request.set_return_tokens(true);
  v1::TokenizeResponse response;
  ASSERT_TRUE(stub->Tokenize(&ctx, request, &response).ok());
  ASSERT_EQ(response.tokens_size(), response.ids_size());
  EXPECT_EQ(response.tokens(1), "Ġcapital") << "byte-level spelling of \" capital\"";
}

TEST_F(DeepSeekTextTest, StreamedTextIsTheDecodeOfTheStreamedIds) {
  auto stub = deployment_->Inference();
  v1::GenerateRequest request = TextRequest("你好，世界! Once upon a time", 40);
  request.mutable_sampling()->set_temperature(1.0f);  // a wide spread of tokens
  request.mutable_sampling()->set_seed(11);
  request.set_logprobs(2);
  Stream s = Generate(*stub, request);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  ASSERT_TRUE(s.has_final);
  ASSERT_EQ(s.tokens.size(), 40u);
  EXPECT_EQ(s.text, *tokenizer_->Decode(s.tokens, {.skip_special_tokens = true}));
  EXPECT_FALSE(s.text.empty());
  EXPECT_EQ(s.final.usage().completion_tokens(), s.tokens.size());
  EXPECT_EQ(s.final.finish_reason(), v1::FINISH_REASON_LENGTH);
  // Reported tokens carry their own text.
  ASSERT_EQ(s.logprobs.size(), s.tokens.size());
  for (const v1::GeneratedTokenLogprobs& lp : s.logprobs) {
    const auto id = static_cast<int32_t>(lp.chosen().id());
    EXPECT_EQ(lp.chosen().text(), *tokenizer_->Decode({&id, 1})) << "token " << id;
    ASSERT_EQ(lp.top_size(), 2);
    const auto alt = static_cast<int32_t>(lp.top(1).id());
    EXPECT_EQ(lp.top(1).text(), *tokenizer_->Decode({&alt, 1})) << "token " << alt;
  }
}

// The byte offset where the UTF-8 character that ends `text` starts.
size_t LastCharStart(const std::string& text) {
  size_t i = text.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) --i;
  return i;
}

// The byte length of the UTF-8 character that starts `text`.
size_t FirstCharLength(const std::string& text) {
  size_t n = 1;
  while (n < text.size() && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) ++n;
  return n;
}

TEST_F(DeepSeekTextTest, AStopStringAcrossTokensStopsIsNotSentAndFreesTheKvBlocks) {
  auto stub = deployment_->Inference();
  const std::string prompt = "The quick brown fox";
  Stream full = Generate(*stub, TextRequest(prompt, 24));
  ASSERT_TRUE(full.status.ok()) << full.status.error_message();
  ASSERT_EQ(full.tokens.size(), 24u);
  // The text after each token; a stop string made of the last character of
  // one token's text and the first of the next one's.
  std::vector<std::string> prefix(full.tokens.size() + 1);
  for (size_t j = 1; j <= full.tokens.size(); ++j) {
    prefix[j] = *tokenizer_->Decode({full.tokens.data(), j}, {.skip_special_tokens = true});
  }
  std::string stop;
  size_t stop_tokens = 0;  // tokens generated until the stop string completes
  for (size_t k = 2; k + 1 < full.tokens.size() && stop.empty(); ++k) {
    const std::string& before = prefix[k];
    if (before.size() <= prefix[k - 1].size() || prefix[k + 1].size() <= before.size() ||
        full.text.compare(0, before.size(), before) != 0) {
      continue;  // an empty or partial-character token
    }
    const size_t start = LastCharStart(before);
    const std::string candidate = full.text.substr(
        start, before.size() - start + FirstCharLength(full.text.substr(before.size())));
    // Its first occurrence must span the boundary, so that the test means it.
    if (full.text.find(candidate) != start) continue;
    stop = candidate;
    stop_tokens = k + 1;
  }
  ASSERT_FALSE(stop.empty()) << "no token boundary to put a stop string across in \"" << full.text
                             << "\"";

  v1::GenerateRequest request = TextRequest(prompt, 2000);  // would hold KV for 2000 steps
  request.mutable_stopping()->add_stop("a stop string that never occurs");
  request.mutable_stopping()->add_stop(stop);
  Stream s = Generate(*stub, request);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  ASSERT_TRUE(s.has_final);
  EXPECT_EQ(s.final.finish_reason(), v1::FINISH_REASON_STOP_STRING);
  EXPECT_EQ(s.final.stop_reason(), stop);
  EXPECT_EQ(s.text, full.text.substr(0, full.text.find(stop)))
      << "stop string \"" << stop << "\" in \"" << full.text << "\"";
  EXPECT_EQ(s.tokens, std::vector<int32_t>(full.tokens.begin(), full.tokens.begin() + stop_tokens))
      << "generation ends with the token that completes the stop string";
  EXPECT_EQ(s.final.usage().completion_tokens(), stop_tokens);
  for (const std::string& delta : s.deltas) EXPECT_THAT(delta, ::testing::Not(HasSubstr(stop)));
  ASSERT_TRUE(WaitFor(
      [&] {
        const v1::ClusterState state = deployment_->State();
        return state.workers_size() == 1 && state.workers(0).kv_blocks_used() == 0;
      },
      5))
      << "KV blocks still used after the stop string: " << deployment_->State().DebugString();
  const std::string metrics = HttpGet(deployment_->metrics_port(), "/metrics");
  const std::string counter = "moeserve_requests_finished_total{finish_reason=\"stop_string\"} ";
  const size_t at = metrics.find(counter);
  ASSERT_NE(at, std::string::npos) << metrics;
  EXPECT_GE(std::stod(metrics.substr(at + counter.size())), 1.0) << metrics;
}

TEST_F(DeepSeekTextTest, ChatRendersTheDeepSeekTemplate) {
  auto stub = deployment_->Inference();
  // DeepSeek-V3's template: BOS, the system prompt, then the turns, and the
  // assistant's header as the generation prompt.
  const std::string rendered =
      "<｜begin▁of▁sentence｜>Be brief.<｜User｜>What is 2+2?<｜Assistant｜>";
  auto ids = Tokenize(*stub, rendered, /*add_special_tokens=*/false);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->front(), tokenizer_->bos_id().value());

  Stream chat = Chat(*stub, ChatRequest({{"system", "Be brief."}, {"user", "What is 2+2?"}}, 6));
  Stream generate = Generate(*stub, IdsRequest(*ids, 6));
  ASSERT_TRUE(chat.status.ok()) << chat.status.error_message();
  ASSERT_TRUE(generate.status.ok()) << generate.status.error_message();
  EXPECT_EQ(chat.final.usage().prompt_tokens(), ids->size());
  EXPECT_EQ(chat.tokens, generate.tokens);
  EXPECT_EQ(chat.text, generate.text);

  // Stop strings work in Chat as in Generate.
  ASSERT_GE(chat.text.size(), 2u);
  v1::ChatRequest stopped = ChatRequest({{"system", "Be brief."}, {"user", "What is 2+2?"}}, 6);
  const std::string first_char = chat.text.substr(0, FirstCharLength(chat.text));
  stopped.mutable_stopping()->add_stop(first_char);
  Stream s = Chat(*stub, stopped);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.final.finish_reason(), v1::FINISH_REASON_STOP_STRING);
  EXPECT_EQ(s.text, "");
}

TEST_F(DeepSeekTextTest, InvalidUtf8IsInvalidArgumentNamingTheFieldAndTheServiceKeepsServing) {
  auto stub = deployment_->Inference();
  const std::string bad =
      "ab\xff"
      "cd";
  Stream text = Generate(*stub, TextRequest(bad, 2));
  EXPECT_EQ(text.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(text.status.error_message(), HasSubstr("text is not valid UTF-8"));
  EXPECT_THAT(text.status.error_message(), HasSubstr("byte offset 2"));

  v1::GenerateRequest stop = TextRequest("fine", 2);
  stop.mutable_stopping()->add_stop("ok");
  stop.mutable_stopping()->add_stop("\xc3");
  Stream stopped = Generate(*stub, stop);
  EXPECT_EQ(stopped.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(stopped.status.error_message(), HasSubstr("stopping.stop[1] is not valid UTF-8"));

  Stream chat = Chat(*stub, ChatRequest({{"system", "fine"}, {"user", bad}}, 2));
  EXPECT_EQ(chat.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(chat.status.error_message(), HasSubstr("messages[1].content is not valid UTF-8"));

  auto tokenized = Tokenize(*stub, bad, false);
  EXPECT_EQ(tokenized.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tokenized.status().message(), HasSubstr("text is not valid UTF-8"));

  Stream empty = Generate(*stub, TextRequest("", 2));
  EXPECT_EQ(empty.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(empty.status.error_message(), HasSubstr("the prompt is empty"));

  Stream ok = Generate(*stub, TextRequest("Still serving?", 2));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_EQ(ok.tokens.size(), 2u);
}

// ---------------------------------------------------------------------------
// A tiny Qwen3-MoE: its template's thinking switch, and a worker of another
// model refused for its vocabulary.

class Qwen3ChatTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string model = TinyModel("qwen3_moe");
    deployment_ = new Deployment("qwen3", {"--tokenizer", model}, model);
    ASSERT_TRUE(deployment_->WaitServing()) << deployment_->logs();
  }
  static void TearDownTestSuite() { delete deployment_; }

  // Chat's tokens and prompt length against Generate of `rendered`'s ids.
  static void ExpectChatAsRendered(const v1::ChatRequest& request, const std::string& rendered) {
    auto stub = deployment_->Inference();
    auto ids = Tokenize(*stub, rendered, /*add_special_tokens=*/false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    Stream chat = Chat(*stub, request);
    Stream generate = Generate(*stub, IdsRequest(*ids, request.stopping().max_tokens()));
    ASSERT_TRUE(chat.status.ok()) << chat.status.error_message();
    ASSERT_TRUE(generate.status.ok()) << generate.status.error_message();
    EXPECT_EQ(chat.final.usage().prompt_tokens(), ids->size()) << rendered;
    EXPECT_EQ(chat.tokens, generate.tokens) << rendered;
  }

  static inline Deployment* deployment_ = nullptr;
};

TEST_F(Qwen3ChatTest, EnableThinkingReachesTheTemplate) {
  const std::string turn = "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n";
  v1::ChatRequest request = ChatRequest({{"user", "Hi there"}}, 4);
  ExpectChatAsRendered(request, turn);
  request.set_enable_thinking(false);
  ExpectChatAsRendered(request, turn + "<think>\n\n</think>\n\n");
  request.set_enable_thinking(true);
  ExpectChatAsRendered(request, turn);

  // The same switch through template_kwargs.
  v1::ChatRequest kwargs = ChatRequest({{"user", "Hi there"}}, 4);
  (*kwargs.mutable_template_kwargs()->mutable_fields())["enable_thinking"].set_bool_value(false);
  ExpectChatAsRendered(kwargs, turn + "<think>\n\n</think>\n\n");

  // Without the generation prompt, and an unset (null-like) content as "".
  v1::ChatRequest plain = ChatRequest({{"system", ""}, {"user", "Hi there"}}, 4);
  plain.set_add_generation_prompt(false);
  ExpectChatAsRendered(plain,
                       "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n");
}

TEST_F(Qwen3ChatTest, BadChatRequestsAreInvalidArgument) {
  auto stub = deployment_->Inference();
  Stream empty = Chat(*stub, ChatRequest({}, 4));
  EXPECT_EQ(empty.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(empty.status.error_message(), HasSubstr("messages is empty"));

  v1::ChatRequest reserved = ChatRequest({{"user", "Hi"}}, 4);
  (*reserved.mutable_template_kwargs()->mutable_fields())["messages"].set_string_value("x");
  Stream r = Chat(*stub, reserved);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(r.status.error_message(), HasSubstr("template_kwargs may not set \"messages\""));
}

TEST_F(Qwen3ChatTest, AWorkerWhoseVocabularyIsSmallerThanTheTokenizersIsRefused) {
  // Qwen3's tokenizer (151669 tokens) cannot serve DeepSeek-V3's 129280 rows.
  std::unique_ptr<Process> worker =
      deployment_->StartWorker("qwen3_mismatch", TinyModel("deepseek_v3"));
  ASSERT_TRUE(WaitFor([&] { return !worker->running(); }, 30)) << worker->log();
  EXPECT_EQ(worker->Stop(), 1);
  EXPECT_THAT(worker->log(), HasSubstr("it is not this model's tokenizer"));
  EXPECT_THAT(worker->log(), HasSubstr("vocabulary of 129280 tokens"));
  // The coordinator keeps serving its own worker.
  Stream ok = Generate(*deployment_->Inference(), TextRequest("Hi", 2));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
}

// ---------------------------------------------------------------------------
// Coordinators without a worker: refusals that come before any model work.

TEST(TextWithoutTokenizerTest, TextChatAndTokenizeAreFailedPreconditionNamingTheFlag) {
  Deployment bare("bare", {}, "");
  ASSERT_TRUE(bare.listening()) << bare.logs();
  auto stub = bare.Inference();
  auto tokenized = Tokenize(*stub, "hello", false);
  EXPECT_EQ(tokenized.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(tokenized.status().message(), HasSubstr("--tokenizer"));
  Stream text = Generate(*stub, TextRequest("hello", 2));
  EXPECT_EQ(text.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(text.status.error_message(), HasSubstr("text input needs the model's tokenizer"));
  Stream chat = Chat(*stub, ChatRequest({{"user", "hello"}}, 2));
  EXPECT_EQ(chat.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(chat.status.error_message(), HasSubstr("--tokenizer"));
}

TEST(TextWithoutTokenizerTest, ABadTokenizerDirectoryStopsTheCoordinatorWithExitCode2) {
  const std::string dir = ScratchDir() + "/no_tokenizer_here";
  fs::create_directories(dir);
  const Planes planes("bad_tokenizer");
  const CommandResult r = RunCommand(kBin +
                                     "/tools/coordinator/moeserve-coordinator --metrics-port 0 "
                                     "--listen 127.0.0.1:0 --internal-listen 127.0.0.1:0 "
                                     "--internal-token-file " +
                                     planes.token_file() + " --tokenizer " + dir + " 2>&1");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_THAT(r.out, HasSubstr("--tokenizer " + dir));
  EXPECT_THAT(r.out, HasSubstr("tokenizer.json"));
}

TEST(ChatTemplateErrorTest, TheTemplatesRaiseExceptionIsInvalidArgumentWithItsMessage) {
  // DeepSeek-V3's tokenizer with a template that refuses conversations not
  // opened by a system prompt.
  const std::string dir = ScratchDir() + "/raising_template";
  fs::create_directories(dir);
  const std::string model = TinyModel("deepseek_v3");
  fs::copy_file(model + "/tokenizer.json", dir + "/tokenizer.json",
                fs::copy_options::overwrite_existing);
  std::ifstream in(model + "/tokenizer_config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  config["chat_template"] =
      "{% if messages[0]['role'] != 'system' %}"
      "{{ raise_exception('The first message must be the system prompt, not ' + "
      "messages[0]['role']) }}{% endif %}"
      "{% for m in messages %}{{ m['content'] }}{% endfor %}";
  std::ofstream(dir + "/tokenizer_config.json") << config.dump();

  Deployment raising("raising", {"--tokenizer", dir}, "");
  ASSERT_TRUE(raising.listening()) << raising.logs();
  auto stub = raising.Inference();
  Stream refused = Chat(*stub, ChatRequest({{"user", "hello"}}, 2));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(refused.status.error_message(),
            "The first message must be the system prompt, not user");
  // A conversation the template accepts gets past it (to the missing worker).
  Stream accepted = Chat(*stub, ChatRequest({{"system", "s"}, {"user", "hello"}}, 2));
  EXPECT_EQ(accepted.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << accepted.status.error_message();
}

}  // namespace
}  // namespace moeserve::testing
