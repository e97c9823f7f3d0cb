// The OpenAI-compatible HTTP API end to end: a moeserve-coordinator with
// --http-listen, --tokenizer and --api-key-file, and a moeserve-worker
// serving a tiny DeepSeek-V3-layout checkpoint, on loopback. Real clients:
// the official `openai` npm package (tests/integration/openai/
// openai_client_test.mjs, installed by tools/setup.sh) and curl for the raw
// bytes of server-sent events, status codes and headers.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "moeserve/v1/admin.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/integration/process.h"

namespace moeserve::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::StartsWith;

const std::string kBin = MOESERVE_BINARY_DIR;
const std::string kApiKey = "sk-moeserve-test-key";
const std::string kModelName = "deepseek_v3";  // the checkpoint directory's name

const std::string& ScratchDir() { return ProcessScratchDir("openai_api"); }

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::vector<std::string> Concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A coordinator serving HTTP with an API key, and (with `worker`) a worker.
class Deployment {
 public:
  explicit Deployment(bool worker, const std::vector<std::string>& extra_flags = {})
      : planes_("openai"), http_port_(FreePort()), metrics_port_(FreePort()) {
    model_ = ScratchDir() + "/" + kModelName;
    const CommandResult made = RunCommand(kBin +
                                          "/tools/moeserve/moeserve make-tiny-model "
                                          "--arch deepseek_v3 --dtype bf16 --shards 1 --out " +
                                          model_ + " 2>&1");
    EXPECT_EQ(made.exit_code, 0) << made.out;
    const std::string key_file = ScratchDir() + "/api_keys";
    std::ofstream(key_file) << "  other-key\n\n" << kApiKey << "\n";
    std::vector<std::string> flags = extra_flags;
    coordinator_ = std::make_unique<Process>(
        kBin + "/tools/coordinator/moeserve-coordinator",
        Concat(Concat(flags, planes_.CoordinatorFlags()),
               std::vector<std::string>{"--metrics-port", std::to_string(metrics_port_),
                                        "--http-listen", "127.0.0.1:" + std::to_string(http_port_),
                                        "--api-key-file", key_file, "--tokenizer", model_}),
        ScratchDir() + "/coordinator.log");
    // curl prints 000 (after its error) while nothing listens.
    listening_ = WaitFor(
        [&] {
          const std::string out = Curl("-o /dev/null " + Url("/health")).out;
          return out.size() >= 3 && out.substr(out.size() - 3) != "000";
        },
        30);
    if (worker && listening_) {
      worker_ = std::make_unique<Process>(
          kBin + "/tools/worker/moeserve-worker",
          Concat(planes_.WorkerFlags(),
                 std::vector<std::string>{"--model", model_, "--kv-cache-tokens", "4096",
                                          "--reconnect-seconds", "0"}),
          ScratchDir() + "/worker.log");
    }
  }
  ~Deployment() {
    if (worker_ != nullptr) worker_->Stop();
    coordinator_->Stop(2);
  }

  bool WaitServing() {
    return listening_ &&
           WaitFor([&] { return Curl("-o /dev/null " + Url("/health")).out == "200"; }, 90);
  }
  std::string Url(const std::string& path) const {
    return Quote("http://127.0.0.1:" + std::to_string(http_port_) + path);
  }
  // curl with `args`; stdout is what -w and -o leave (by default the HTTP status).
  CommandResult Curl(const std::string& args, bool status = true) const {
    return RunCommand("curl -sS --max-time 60 " + std::string(status ? "-w '%{http_code}' " : "") +
                      args + " 2>&1");
  }
  std::string logs() const {
    return coordinator_->log() + (worker_ != nullptr ? worker_->log() : "");
  }
  std::string grpc_address() const { return planes_.address(); }
  // Admin: the internal port with the Admin token.
  std::shared_ptr<grpc::Channel> AdminChannel() const { return planes_.AdminChannel(); }
  int http_port() const { return http_port_; }
  int metrics_port() const { return metrics_port_; }

 private:
  Planes planes_;
  int http_port_, metrics_port_;
  std::string model_;
  bool listening_ = false;
  std::unique_ptr<Process> coordinator_;
  std::unique_ptr<Process> worker_;
};

std::string Auth() { return "-H " + Quote("Authorization: Bearer " + kApiKey) + " "; }
std::string JsonBody(const std::string& body) {
  return "-H 'Content-Type: application/json' -d " + Quote(body) + " ";
}

bool NodeMissing() { return RunCommand("command -v node >/dev/null 2>&1").exit_code != 0; }

class OpenAiClient : public ::testing::TestWithParam<const char*> {};

// One group of checks in openai_client_test.mjs against a fresh deployment.
TEST_P(OpenAiClient, Group) {
  if (NodeMissing()) {
    GTEST_SKIP() << "node is not installed: tools/setup.sh installs it (nodejs)";
  }
  const std::string modules = std::string(MOESERVE_CACHE_DIR) + "/npm/node_modules";
  ASSERT_TRUE(fs::exists(modules + "/openai/package.json"))
      << "the openai npm package is missing from " << modules << ": run tools/setup.sh";
  Deployment d(/*worker=*/true);
  ASSERT_TRUE(d.WaitServing()) << d.logs();
  const std::string command =
      "MOESERVE_NODE_MODULES=" + Quote(modules) + " OPENAI_BASE_URL=" + d.Url("/v1") +
      " OPENAI_API_KEY=" + Quote(kApiKey) + " MOESERVE_MODEL=" + kModelName +
      " MOESERVE_METRICS_URL=" +
      Quote("http://127.0.0.1:" + std::to_string(d.metrics_port()) + "/metrics") + " node " +
      Quote(std::string(MOESERVE_SOURCE_DIR) + "/tests/integration/openai/openai_client_test.mjs") +
      " " + GetParam() + " 2>&1";
  const CommandResult run = RunCommand(command);
  EXPECT_EQ(run.exit_code, 0) << run.out << "\n--- logs ---\n" << d.logs();
  EXPECT_THAT(run.out, HasSubstr(std::string("ok ") + GetParam()));
  if (std::string(GetParam()) == "abort") {
    // The aborted requests are gone from the engine, and their KV with them.
    auto admin = v1::Admin::NewStub(d.AdminChannel());
    v1::ClusterState state;
    EXPECT_TRUE(WaitFor(
        [&] {
          grpc::ClientContext ctx;
          state.Clear();
          return admin->GetClusterState(&ctx, {}, &state).ok() && state.running_requests() == 0 &&
                 state.waiting_requests() == 0;
        },
        30))
        << state.DebugString();
  }
}

INSTANTIATE_TEST_SUITE_P(Groups, OpenAiClient,
                         ::testing::Values("basics", "stream", "n", "logprobs", "errors", "abort"),
                         [](const auto& info) { return std::string(info.param); });

// The bytes of a stream as curl sees them: SSE events of OpenAI's chunk
// format, blank-line separated, ending with "data: [DONE]".
TEST(OpenAiCurl, ServerSentEventsFraming) {
  Deployment d(/*worker=*/true);
  ASSERT_TRUE(d.WaitServing()) << d.logs();
  const CommandResult sse = d.Curl(
      "-N -i " + Auth() +
          JsonBody(R"({"model": "deepseek_v3", "messages": [{"role": "user", "content": "Hi"}],
                       "max_tokens": 5, "temperature": 0, "ignore_eos": true, "stream": true,
                       "stream_options": {"include_usage": true}})") +
          d.Url("/v1/chat/completions"),
      /*status=*/false);
  ASSERT_EQ(sse.exit_code, 0) << sse.out;
  const size_t header_end = sse.out.find("\r\n\r\n");
  ASSERT_NE(header_end, std::string::npos) << sse.out;
  const std::string headers = sse.out.substr(0, header_end);
  EXPECT_THAT(headers, StartsWith("HTTP/1.1 200 OK"));
  EXPECT_THAT(headers, HasSubstr("Content-Type: text/event-stream"));
  EXPECT_THAT(headers, HasSubstr("Transfer-Encoding: chunked"));
  const std::string body = sse.out.substr(header_end + 4);
  // Events: "data: <json>\n\n" ... "data: [DONE]\n\n", nothing else.
  std::vector<nlohmann::json> events;
  size_t at = 0;
  bool done = false;
  while (at < body.size()) {
    const size_t end = body.find("\n\n", at);
    ASSERT_NE(end, std::string::npos) << "an event without its blank line: " << body.substr(at);
    const std::string event = body.substr(at, end - at);
    ASSERT_THAT(event, StartsWith("data: "));
    ASSERT_FALSE(done) << "an event after [DONE]";
    if (event == "data: [DONE]") {
      done = true;
    } else {
      events.push_back(nlohmann::json::parse(event.substr(6)));
    }
    at = end + 2;
  }
  EXPECT_TRUE(done) << body;
  ASSERT_GE(events.size(), 3u) << body;
  EXPECT_EQ(events.front()["choices"][0]["delta"]["role"], "assistant");
  std::string id = events.front()["id"];
  for (const auto& e : events) {
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    EXPECT_EQ(e["id"], id);  // one id for the whole stream
  }
  EXPECT_EQ(events[events.size() - 2]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(events.back()["choices"].size(), 0u);
  EXPECT_EQ(events.back()["usage"]["completion_tokens"], 5);
}

TEST(OpenAiCurl, StatusCodesAndErrorBodies) {
  Deployment d(/*worker=*/true);
  ASSERT_TRUE(d.WaitServing()) << d.logs();
  const std::string chat = d.Url("/v1/chat/completions");
  // 401 without a key or with a wrong one; /health needs none.
  CommandResult r = d.Curl(JsonBody(R"({"messages": []})") + chat);
  EXPECT_THAT(r.out, HasSubstr(R"("code":"invalid_api_key"})"));
  EXPECT_THAT(r.out, EndsWith("401"));
  r = d.Curl("-H 'Authorization: Bearer nope' " + d.Url("/v1/models"));
  EXPECT_THAT(r.out, EndsWith("401"));
  EXPECT_EQ(d.Curl("-o /dev/null " + d.Url("/health")).out, "200");
  // 400: not JSON, wrong types, values the gRPC service refuses alike.
  r = d.Curl(Auth() + JsonBody("{not json") + chat);
  EXPECT_THAT(r.out, HasSubstr("not valid JSON"));
  EXPECT_THAT(r.out, EndsWith("400"));
  r = d.Curl(Auth() + JsonBody(R"({"messages": [{"role": "user", "content": "x"}], "top_p": 0})") +
             chat);
  EXPECT_THAT(r.out, HasSubstr(R"({"error":{"message":"sampling.top_p must be in (0, 1], got 0",)"
                               R"("type":"invalid_request_error","param":"top_p","code":null}})"));
  EXPECT_THAT(r.out, EndsWith("400"));
  r = d.Curl(Auth() + JsonBody(R"({"messages": [{"role": "user", "content": "x"}], "n": "2"})") +
             chat);
  EXPECT_THAT(r.out, HasSubstr("n must be an integer, got a string"));
  // 404: routes and models.
  r = d.Curl(Auth() + d.Url("/v1/embeddings"));
  EXPECT_THAT(r.out, HasSubstr("Invalid URL (GET /v1/embeddings)"));
  EXPECT_THAT(r.out, EndsWith("404"));
  r = d.Curl(Auth() + d.Url("/v1/models/gpt-4"));
  EXPECT_THAT(r.out, HasSubstr(R"("code":"model_not_found")"));
  // Unknown fields are ignored; a whole answer has Content-Length.
  r = d.Curl("-i " + Auth() +
                 JsonBody(R"({"prompt": "a", "max_tokens": 2, "no_such_field": [1]})") +
                 d.Url("/v1/completions"),
             /*status=*/false);
  EXPECT_THAT(r.out, StartsWith("HTTP/1.1 200 OK"));
  EXPECT_THAT(r.out, HasSubstr("Content-Length: "));
  EXPECT_THAT(r.out, HasSubstr(R"("object":"text_completion")"));
}

// One request runs and none may wait: the next is 429, as gRPC's
// RESOURCE_EXHAUSTED, with the same words; the first is unharmed.
TEST(OpenAiCurl, FullQueueIs429) {
  Deployment d(/*worker=*/true, {"--max-running-seqs", "1", "--max-waiting", "0"});
  ASSERT_TRUE(d.WaitServing()) << d.logs();
  const std::string out = ScratchDir() + "/long.out";
  // A long stream in the background, read until it has started.
  const std::string long_request =
      "curl -sS -N --max-time 120 " + Auth() +
      JsonBody(R"({"prompt": [1, 2, 3], "max_tokens": 3000, "ignore_eos": true, "stream": true})") +
      d.Url("/v1/completions") + " > " + out + " 2>&1 & echo $!";
  const CommandResult started = RunCommand(long_request);
  ASSERT_EQ(started.exit_code, 0);
  const std::string curl_pid = started.out.substr(0, started.out.find('\n'));
  ASSERT_TRUE(
      WaitFor([&] { return RunCommand("grep -c text_completion " + out).out != "0\n"; }, 60));
  const CommandResult r = d.Curl(Auth() + JsonBody(R"({"prompt": [1, 2], "max_tokens": 2})") +
                                 d.Url("/v1/completions"));
  EXPECT_THAT(r.out, HasSubstr(R"("type":"rate_limit_error","param":null,"code":"queue_full")"));
  EXPECT_THAT(r.out, HasSubstr("the waiting queue is full"));
  EXPECT_THAT(r.out, EndsWith("429"));
  RunCommand("kill " + curl_pid + " >/dev/null 2>&1; true");  // the long stream's curl
}

TEST(OpenAiCurl, NotReadyIs503) {
  Deployment d(/*worker=*/false);
  ASSERT_EQ(d.Curl("-o /dev/null " + d.Url("/health")).out, "503") << d.logs();
  const CommandResult r = d.Curl(Auth() + JsonBody(R"({"prompt": [1, 2], "max_tokens": 2})") +
                                 d.Url("/v1/completions"));
  EXPECT_THAT(r.out, HasSubstr("no worker is ready yet; retry shortly"));
  EXPECT_THAT(r.out, EndsWith("503"));
}

// moeserve bench drives the HTTP API with the same workload and report as
// gRPC: every request completes with exactly its drawn tokens (counted from
// the final usage, each token's gap once); a key the server does not know
// stops the bench at its first request, with the server's status.
TEST(OpenAiBench, BenchDrivesTheHttpApiWithTheSameReport) {
  Deployment d(/*worker=*/true);
  ASSERT_TRUE(d.WaitServing()) << d.logs();
  const std::string key_file = ScratchDir() + "/bench_key";
  std::ofstream(key_file) << kApiKey << "\n";
  const std::string bench =
      kBin + "/tools/moeserve/moeserve bench --http 127.0.0.1:" + std::to_string(d.http_port()) +
      " --vocab-size 1000 --num-requests 8 --concurrency 4"
      " --prompt-tokens 8 --output-tokens 5 --seed 3 --json --api-key-file ";
  const CommandResult run = RunCommand(bench + key_file);
  ASSERT_EQ(run.exit_code, 0) << run.out << d.logs();
  const auto report = nlohmann::json::parse(run.out, nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << run.out;
  EXPECT_EQ(report.at("completed"), 8) << run.out;
  EXPECT_EQ(report.at("failed"), 0) << run.out;
  EXPECT_EQ(report.at("output_tokens"), 40) << run.out;
  EXPECT_EQ(report.at("ttft_ms").at("count"), 8) << run.out;
  EXPECT_EQ(report.at("itl_ms").at("count"), 32) << run.out;
  EXPECT_EQ(report.at("config").at("api"), "http") << run.out;

  const std::string wrong_key = ScratchDir() + "/wrong_key";
  std::ofstream(wrong_key) << "sk-not-a-key\n";
  const CommandResult refused = RunCommand(bench + wrong_key + " 2>&1");
  EXPECT_EQ(refused.exit_code, 1) << refused.out;
  EXPECT_THAT(refused.out, HasSubstr("HTTP 401")) << refused.out;
}

}  // namespace
}  // namespace moeserve::testing
