#include "tools/moeserve/bench_command.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "boost/asio/connect.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
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
  std::string server;  // gRPC, or
  std::string http;    // the OpenAI-compatible HTTP API
  std::string api_key;
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
  if (args.Has("server") == args.Has("http")) {
    return absl::InvalidArgumentError(
        "give the coordinator's gRPC address (--server ADDR) or its HTTP API (--http ADDR)");
  }
  o.server = args.Get("server").value_or("");
  o.http = args.Get("http").value_or("");
  if (!o.http.empty() && !args.Has("vocab-size")) {
    return absl::InvalidArgumentError(
        "--http needs --vocab-size (the HTTP API does not report the vocabulary)");
  }
  if (auto file = args.Get("api-key-file"); file.has_value()) {
    if (o.http.empty()) return absl::InvalidArgumentError("--api-key-file needs --http");
    std::ifstream in(*file);
    std::string line;
    while (std::getline(in, line)) {
      const size_t b = line.find_first_not_of(" \t\r"), e = line.find_last_not_of(" \t\r");
      if (b != std::string::npos) {
        o.api_key = line.substr(b, e - b + 1);
        break;
      }
    }
    if (o.api_key.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--api-key-file ", *file, ": cannot read a key from it"));
    }
  }
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

namespace beast = boost::beast;
namespace http = beast::http;

// Where the HTTP API is: host, port, and what every request carries.
struct HttpTarget {
  std::string host, port;
  std::string model;    // the id GET /v1/models lists first
  std::string api_key;  // empty: none
};

absl::StatusOr<HttpTarget> ParseHttpTarget(const std::string& address, std::string api_key) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--http ", address, ": expected host:port, e.g. 127.0.0.1:8000"));
  }
  return HttpTarget{address.substr(0, colon), std::to_string(port), "", std::move(api_key)};
}

// One HTTP exchange on a new connection. With `on_body`, the body's pieces
// go there as they arrive (a chunked stream) and `body` stays empty.
struct HttpExchangeResult {
  int status = 0;
  std::string body;
  std::string error;  // transport failure
};
HttpExchangeResult Exchange(const HttpTarget& t, http::verb verb, const std::string& target,
                            const std::string& body,
                            const std::function<void(std::string_view)>& on_body = nullptr) {
  HttpExchangeResult r;
  boost::asio::io_context io;
  beast::tcp_stream stream(io);
  beast::error_code ec;
  boost::asio::ip::tcp::resolver resolver(io);
  const auto endpoints = resolver.resolve(t.host, t.port, ec);
  if (!ec) stream.connect(endpoints, ec);
  if (ec) {
    r.error = ec.message();
    return r;
  }
  stream.expires_after(kRequestDeadline);
  http::request<http::string_body> request{verb, target, 11};
  request.set(http::field::host, t.host);
  if (!t.api_key.empty()) request.set(http::field::authorization, "Bearer " + t.api_key);
  if (!body.empty()) {
    request.set(http::field::content_type, "application/json");
    request.body() = body;
  }
  request.prepare_payload();
  http::write(stream, request, ec);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(std::uint64_t{1} << 40);  // a stream is as long as its tokens
  if (!ec) http::read_header(stream, buffer, parser, ec);
  if (!ec) {
    r.status = parser.get().result_int();
    auto forward = [&](std::uint64_t, beast::string_view piece, beast::error_code&) {
      on_body(std::string_view(piece.data(), piece.size()));
      return piece.size();
    };
    if (on_body != nullptr && r.status == 200) parser.on_chunk_body(forward);
    while (!ec && !parser.is_done()) http::read(stream, buffer, parser, ec);
    r.body = parser.get().body();
  }
  if (ec) r.error = ec.message();
  stream.socket().shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
  return r;
}

// The model id the server lists first (GET /v1/models).
absl::Status AskModel(HttpTarget& t) {
  const HttpExchangeResult r = Exchange(t, http::verb::get, "/v1/models", "");
  const auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (r.status != 200 || j.is_discarded() || !j.contains("data") || !j["data"].is_array() ||
      j["data"].empty() || !j["data"][0].contains("id")) {
    return absl::UnavailableError(absl::StrCat(
        "could not list the models of http://", t.host, ":", t.port, "/v1/models (HTTP ", r.status,
        r.error.empty() ? "" : ", ", r.error, "): ", r.body.substr(0, 200)));
  }
  t.model = j["data"][0]["id"].get<std::string>();
  return absl::OkStatus();
}

// Sends one request as a streamed /v1/completions and measures it as SendOne
// does: events with text are token arrivals; the final usage gives the count.
RequestResult SendOneHttp(const HttpTarget& t, const BenchRequest& req, float temperature,
                          uint64_t sampling_seed) {
  nlohmann::json body = {{"model", t.model},
                         {"prompt", req.prompt_ids},
                         {"max_tokens", req.output_tokens},
                         {"ignore_eos", true},
                         {"temperature", temperature},
                         {"seed", sampling_seed},
                         {"stream", true},
                         {"stream_options", {{"include_usage", true}}}};
  RequestResult r;
  r.prompt_tokens = static_cast<int64_t>(req.prompt_ids.size());
  const Clock::time_point sent = Clock::now();
  Clock::time_point last = sent;
  int64_t events = 0, usage_tokens = -1;
  bool done = false;
  std::string pending, error;
  auto on_event = [&](std::string_view data) {
    if (data == "[DONE]") {
      done = true;
      return;
    }
    const auto j = nlohmann::json::parse(data, nullptr, false);
    if (j.is_discarded()) return;
    if (j.contains("error")) {
      error = "STREAM_ERROR";
      return;
    }
    if (j.contains("usage") && j["usage"].is_object()) {
      usage_tokens = j["usage"].value("completion_tokens", int64_t{0});
    }
    if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty()) return;
    const auto& c = j["choices"][0];
    if (!c.contains("text") || !c["text"].is_string() || c["text"].get<std::string>().empty()) {
      return;
    }
    const Clock::time_point now = Clock::now();
    if (events++ == 0) {
      r.ttft_s = std::chrono::duration<double>(now - sent).count();
    } else {
      r.itl_s.push_back(std::chrono::duration<double>(now - last).count());
    }
    last = now;
  };
  const HttpExchangeResult x =
      Exchange(t, http::verb::post, "/v1/completions", body.dump(), [&](std::string_view piece) {
        pending.append(piece);
        for (size_t end = pending.find("\n\n"); end != std::string::npos;
             end = pending.find("\n\n")) {
          const std::string_view block = std::string_view(pending).substr(0, end);
          for (size_t begin = 0; begin <= block.size();) {
            const size_t stop = std::min(block.find('\n', begin), block.size());
            const std::string_view line = block.substr(begin, stop - begin);
            if (line.substr(0, 6) == "data: ") on_event(line.substr(6));
            begin = stop + 1;
          }
          pending.erase(0, end + 2);
        }
      });
  r.e2e_s = std::chrono::duration<double>(Clock::now() - sent).count();
  if (!x.error.empty()) {
    r.error_code = "CONNECTION";
  } else if (x.status != 200) {
    r.error_code = absl::StrCat("HTTP_", x.status);
  } else if (!error.empty()) {
    r.error_code = error;
  } else if (!done || usage_tokens < 0) {
    r.error_code = "NO_FINAL_MESSAGE";
  }
  r.ok = r.error_code.empty();
  if (usage_tokens > 0) {
    r.output_tokens = usage_tokens;
    // A token whose text came with a later event counts as a zero gap.
    r.itl_s.resize(static_cast<size_t>(std::max<int64_t>(usage_tokens - 1, 0)), 0.0);
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
using SendFn = std::function<RequestResult(const BenchRequest&, float, uint64_t)>;

PhaseResult RunPhase(const SendFn& send, const std::vector<BenchRequest>& requests,
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
        phase.results[i] = send(requests[i], o.temperature, o.workload.seed + i);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  phase.duration_s = std::chrono::duration<double>(Clock::now() - start).count();
  return phase;
}

nlohmann::ordered_json ConfigJson(const BenchOptions& o, int64_t drawn_output_tokens) {
  nlohmann::ordered_json c;
  c["server"] = o.http.empty() ? o.server : "http://" + o.http;
  c["api"] = o.http.empty() ? "grpc" : "http";
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
  SendFn send;
  std::unique_ptr<v1::Inference::Stub> stub;
  HttpTarget target;
  if (o.http.empty()) {
    stub =
        v1::Inference::NewStub(grpc::CreateChannel(o.server, grpc::InsecureChannelCredentials()));
    if (o.workload.vocab_size == 0) {
      auto vocab = AskVocabSize(*stub, o.server);
      if (!vocab.ok()) return Fail(vocab.status());
      o.workload.vocab_size = *vocab;
    }
    send = [&](const BenchRequest& r, float temperature, uint64_t seed) {
      return SendOne(*stub, r, temperature, seed);
    };
  } else {
    auto parsed = ParseHttpTarget(o.http, o.api_key);
    if (!parsed.ok()) return Fail(parsed.status());
    target = *std::move(parsed);
    if (absl::Status s = AskModel(target); !s.ok()) return Fail(s);
    send = [&](const BenchRequest& r, float temperature, uint64_t seed) {
      return SendOneHttp(target, r, temperature, seed);
    };
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
    RunPhase(send, DrawWorkload(w), o.concurrency, o);
  }
  const PhaseResult phase = RunPhase(send, requests, o.concurrency, o);
  const BenchReport report = ComputeReport(phase.results, phase.duration_s, o.slo);

  if (o.json) {
    nlohmann::ordered_json out = ReportToJson(report);
    out["config"] = ConfigJson(o, drawn_output_tokens);
    std::cout << out.dump() << "\n";
    return 0;
  }
  std::cout << (o.http.empty() ? "server " + o.server : "HTTP API http://" + o.http) << ": "
            << o.workload.num_requests << " requests, ";
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
