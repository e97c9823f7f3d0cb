#include "tools/moeserve/bench_command.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "moeserve/v1/inference.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tools/moeserve/bench_stats.h"

namespace moeserve {
namespace {

using Clock = std::chrono::steady_clock;

// "Unbounded" concurrency (--request-rate without --concurrency) still runs
// on a thread per in-flight request; this many at most.
constexpr int64_t kMaxInFlight = 1024;
// A request still streaming after this long is counted as DEADLINE_EXCEEDED,
// so a stuck server cannot hang the benchmark.
constexpr auto kRequestDeadline = std::chrono::seconds(600);

struct BenchOptions {
  std::string server;
  WorkloadOptions workload;
  std::string prompt_spec, output_spec;
  int64_t concurrency = 16;  // requests in flight at most
  bool unbounded = false;    // --request-rate without --concurrency (capped at kMaxInFlight)
  int64_t warmup = 0;
  float temperature = 0;
  SloOptions slo;
  bool json = false;
};

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    default:
      return "UNKNOWN";
  }
}

int Fail(const absl::Status& status) {
  std::cerr << "moeserve bench: " << status.message() << "\n";
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

absl::StatusOr<BenchOptions> ParseOptions(const Args& args) {
  BenchOptions o;
  auto server = args.Required("server");
  if (!server.ok()) return server.status();
  o.server = *server;
  auto num = args.Int("num-requests", 200);
  auto concurrency = args.Int("concurrency", 16);
  auto rate = args.Double("request-rate", 0);
  auto vocab = args.Uint("vocab-size", 0);
  auto seed = args.Uint("seed", 0);
  auto temperature = args.Double("temperature", 0);
  auto ttft = args.Double("slo-ttft-ms", o.slo.ttft_ms);
  auto tpot = args.Double("slo-tpot-ms", o.slo.tpot_ms);
  auto warmup = args.Int("warmup", 0);
  for (const absl::Status& s :
       {num.status(), concurrency.status(), rate.status(), vocab.status(), seed.status(),
        temperature.status(), ttft.status(), tpot.status(), warmup.status()}) {
    if (!s.ok()) return s;
  }
  if (*num < 1) return absl::InvalidArgumentError("--num-requests must be positive");
  if (*concurrency < 1) return absl::InvalidArgumentError("--concurrency must be positive");
  if (args.Has("request-rate") && !(*rate > 0 && std::isfinite(*rate))) {
    return absl::InvalidArgumentError("--request-rate must be a positive number of requests/s");
  }
  if (*vocab > UINT32_MAX) return absl::InvalidArgumentError("--vocab-size is too large");
  if (args.Has("vocab-size") && *vocab == 0) {
    return absl::InvalidArgumentError("--vocab-size must be positive");
  }
  if (!(*temperature >= 0)) return absl::InvalidArgumentError("--temperature must be >= 0");
  if (!(*ttft > 0) || !(*tpot > 0)) {
    return absl::InvalidArgumentError("--slo-ttft-ms and --slo-tpot-ms must be positive");
  }
  if (*warmup < 0) return absl::InvalidArgumentError("--warmup must be >= 0");
  o.prompt_spec = args.Get("prompt-tokens").value_or("128");
  o.output_spec = args.Get("output-tokens").value_or("128");
  auto prompt = ParseLengthDist(o.prompt_spec);
  if (!prompt.ok())
    return absl::InvalidArgumentError(absl::StrCat("--prompt-tokens: ", prompt.status().message()));
  auto output = ParseLengthDist(o.output_spec);
  if (!output.ok())
    return absl::InvalidArgumentError(absl::StrCat("--output-tokens: ", output.status().message()));
  o.workload.num_requests = *num;
  o.workload.prompt_tokens = *prompt;
  o.workload.output_tokens = *output;
  o.workload.vocab_size = static_cast<uint32_t>(*vocab);
  o.workload.request_rate = args.Has("request-rate") ? *rate : 0;
  o.workload.seed = *seed;
  o.unbounded = args.Has("request-rate") && !args.Has("concurrency");
  o.concurrency = o.unbounded ? std::min(*num, kMaxInFlight) : *concurrency;
  o.warmup = *warmup;
  o.temperature = static_cast<float>(*temperature);
  o.slo.ttft_ms = *ttft;
  o.slo.tpot_ms = *tpot;
  o.json = args.Has("json");
  return o;
}

absl::StatusOr<uint32_t> AskVocabSize(v1::Inference::Stub& stub, const std::string& server) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::ModelInfo info;
  const grpc::Status s = stub.GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
  if (!s.ok() || info.vocab_size() == 0) {
    return absl::UnavailableError(
        absl::StrCat("could not ask ", server, " for the vocabulary size (GetModelInfo: ",
                     CodeName(s.error_code()), " ", s.error_message(), "); pass --vocab-size"));
  }
  return info.vocab_size();
}

// Sends one request and measures it; see RequestResult for the definitions.
RequestResult SendOne(v1::Inference::Stub& stub, const BenchRequest& req, float temperature,
                      uint64_t sampling_seed) {
  v1::GenerateRequest request;
  for (uint32_t id : req.prompt_ids) request.mutable_token_ids()->add_ids(id);
  request.mutable_stopping()->set_max_tokens(req.output_tokens);
  request.mutable_stopping()->set_ignore_eos(true);
  request.mutable_sampling()->set_temperature(temperature);
  request.mutable_sampling()->set_seed(sampling_seed);

  RequestResult r;
  r.prompt_tokens = static_cast<int64_t>(req.prompt_ids.size());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kRequestDeadline);
  const Clock::time_point sent = Clock::now();
  Clock::time_point last_token = sent;
  auto reader = stub.Generate(&ctx, request);
  v1::GenerateResponse response;
  bool has_final = false;
  while (reader->Read(&response)) {
    if (response.has_final()) has_final = true;
    if (!response.has_chunk() || response.chunk().token_ids_size() == 0) continue;
    const Clock::time_point now = Clock::now();
    const int k = response.chunk().token_ids_size();
    if (r.output_tokens == 0) {
      r.ttft_s = std::chrono::duration<double>(now - sent).count();
    } else {
      r.itl_s.push_back(std::chrono::duration<double>(now - last_token).count());
    }
    r.itl_s.insert(r.itl_s.end(), static_cast<size_t>(k - 1), 0.0);
    r.output_tokens += k;
    last_token = now;
  }
  const grpc::Status status = reader->Finish();
  r.e2e_s = std::chrono::duration<double>(Clock::now() - sent).count();
  r.ok = status.ok() && has_final;
  if (!status.ok()) {
    r.error_code = CodeName(status.error_code());
  } else if (!has_final) {
    r.error_code = "NO_FINAL_MESSAGE";
  }
  return r;
}

struct PhaseResult {
  std::vector<RequestResult> results;
  double duration_s = 0;
};

// Sends `requests` from `concurrency` threads; each takes the next request in
// order, waits for its arrival time (offsets from the phase start) and sends
// it, so at most `concurrency` are in flight and a request that arrives while
// all are busy waits for a free one. All threads are joined before returning.
PhaseResult RunPhase(v1::Inference::Stub& stub, const std::vector<BenchRequest>& requests,
                     int64_t concurrency, const BenchOptions& o) {
  PhaseResult phase;
  phase.results.resize(requests.size());
  std::atomic<size_t> next{0};
  const Clock::time_point start = Clock::now();
  std::vector<std::thread> threads;
  const int64_t n = std::min<int64_t>(concurrency, static_cast<int64_t>(requests.size()));
  for (int64_t t = 0; t < n; ++t) {
    threads.emplace_back([&] {
      for (size_t i = next.fetch_add(1); i < requests.size(); i = next.fetch_add(1)) {
        std::this_thread::sleep_until(start +
                                      std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(requests[i].arrival_s)));
        phase.results[i] = SendOne(stub, requests[i], o.temperature, o.workload.seed + i);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  phase.duration_s = std::chrono::duration<double>(Clock::now() - start).count();
  return phase;
}

nlohmann::ordered_json ConfigJson(const BenchOptions& o, int64_t drawn_output_tokens) {
  nlohmann::ordered_json c;
  c["server"] = o.server;
  c["num_requests"] = o.workload.num_requests;
  c["concurrency"] =
      o.unbounded ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(o.concurrency);
  c["request_rate"] = o.workload.request_rate > 0 ? nlohmann::ordered_json(o.workload.request_rate)
                                                  : nlohmann::ordered_json(nullptr);
  c["prompt_tokens"] = o.prompt_spec;
  c["output_tokens"] = o.output_spec;
  c["vocab_size"] = o.workload.vocab_size;
  c["seed"] = o.workload.seed;
  c["temperature"] = o.temperature;
  c["warmup"] = o.warmup;
  c["drawn_output_tokens"] = drawn_output_tokens;
  return c;
}

}  // namespace

int RunBench(const Args& args) {
  auto options = ParseOptions(args);
  if (!options.ok()) return Fail(options.status());
  BenchOptions& o = *options;
  auto stub =
      v1::Inference::NewStub(grpc::CreateChannel(o.server, grpc::InsecureChannelCredentials()));
  if (o.workload.vocab_size == 0) {
    auto vocab = AskVocabSize(*stub, o.server);
    if (!vocab.ok()) return Fail(vocab.status());
    o.workload.vocab_size = *vocab;
  }
  const std::vector<BenchRequest> requests = DrawWorkload(o.workload);
  int64_t drawn_output_tokens = 0;
  for (const BenchRequest& r : requests) drawn_output_tokens += r.output_tokens;

  if (o.warmup > 0) {
    // Its own seed stream, sent back to back: the measured workload does not
    // depend on --warmup.
    WorkloadOptions w = o.workload;
    w.num_requests = o.warmup;
    w.request_rate = 0;
    w.seed = o.workload.seed ^ 0x5741524D55505ull;  // "WARMUP"
    RunPhase(*stub, DrawWorkload(w), o.concurrency, o);
  }
  const PhaseResult phase = RunPhase(*stub, requests, o.concurrency, o);
  const BenchReport report = ComputeReport(phase.results, phase.duration_s, o.slo);

  if (o.json) {
    nlohmann::ordered_json out = ReportToJson(report);
    out["config"] = ConfigJson(o, drawn_output_tokens);
    std::cout << out.dump() << "\n";
    return 0;
  }
  std::cout << "server " << o.server << ": " << o.workload.num_requests << " requests, ";
  if (o.workload.request_rate > 0) {
    std::cout << "Poisson arrivals at " << o.workload.request_rate << " req/s, ";
  }
  if (o.unbounded) {
    std::cout << "concurrency unbounded (at most " << kMaxInFlight << ")";
  } else {
    std::cout << "concurrency " << o.concurrency;
  }
  std::cout << ", prompt tokens " << o.prompt_spec << ", output tokens " << o.output_spec
            << ", seed " << o.workload.seed << ", vocab " << o.workload.vocab_size << "\n"
            << FormatReport(report);
  return 0;
}

}  // namespace moeserve
