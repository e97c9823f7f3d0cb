// moeserve-coordinator: the gRPC front door. Admits requests, batches them
// continuously and drives the worker that registers with it.
#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "prometheus/exposer.h"
#include "scheduler/placement/expert_placement.h"
#include "scheduler/server/engine_loop.h"
#include "scheduler/server/http_server.h"
#include "scheduler/server/metrics.h"
#include "scheduler/server/openai_api.h"
#include "scheduler/server/plane_auth.h"
#include "scheduler/server/services.h"
#include "scheduler/server/text_frontend.h"
#include "tools/moeserve/args.h"

namespace moeserve {
namespace {

constexpr char kUsage[] = R"(Usage: moeserve-coordinator [flags]

Serves two ports. The public port (--listen) carries what clients use:
moeserve.v1.Inference, grpc.health.v1 health and server reflection of those
two. The internal port (--internal-listen) carries what only the deployment
may use: worker registration and the group's rendezvous store
(moeserve.worker.v1.Coordinator), and moeserve.v1.Admin when
--admin-token-file is given. Every internal call must present the internal
token (or a client certificate, with mutual TLS); Admin calls must present the
Admin token. Health is NOT_SERVING until every worker rank is ready and while
draining.

Public port:
  --listen ADDR             address to serve clients on (default 0.0.0.0:50051)
  --tls-cert FILE, --tls-key FILE  serve the public port over TLS with this
                            PEM certificate chain and private key (default:
                            plaintext; put TLS in front, e.g. an ingress)

Internal port (workers, rendezvous, Admin):
  --internal-listen ADDR    address to serve workers on; workers' --coordinator
                            points here (default 0.0.0.0:50052). Must differ
                            from --listen.
  --internal-token-file FILE  the shared secret workers present (their
                            --internal-token-file): 16 to 4096 printable bytes,
                            e.g. `head -c 32 /dev/urandom | base64 > FILE`.
                            Default: $MOESERVE_INTERNAL_TOKEN_FILE. Required
                            unless mutual TLS is on; the coordinator does not
                            start with an internal port nobody authenticates on.
  --internal-tls-cert FILE, --internal-tls-key FILE, --internal-tls-ca FILE
                            serve the internal port over mutual TLS: this PEM
                            certificate chain and key, and accept only callers
                            whose client certificate this CA signed. All three
                            or none. With a token as well, calls need both.
  --admin-token-file FILE   serve moeserve.v1.Admin (cluster state, Drain) on
                            the internal port to callers presenting this token
                            (`moeserve placement --admin-token-file`); it must
                            differ from the internal token, so a worker's
                            secret cannot drain the service. Without it Admin
                            is not served at all (UNIMPLEMENTED).

Serving:
  --metrics-port N          Prometheus /metrics port, 0 to disable (default 9400)
  --max-batch-tokens N      tokens per engine step, prefill and decode (default 2048)
  --max-running-seqs N      sequences in each worker rank's running batch at most
                            (default 256; a group of --ep-size ranks runs that
                            many times as many)
  --max-waiting N           requests waiting beyond those the ranks run; more get
                            RESOURCE_EXHAUSTED (default 1024)
  --step-timeout-seconds S  a worker that takes longer for one step is lost (default 60)
  --worker-heartbeat-seconds S
                            ping every worker connection this often and drop a
                            worker that does not answer within as long (a
                            stopped or hung process, a dead host, a cut
                            network): its group is lost at once, not only when
                            a step times out; 0 disables (default 5)
  --request-recovery-timeout-seconds S
                            when a worker is lost, the requests in flight wait
                            this long for the group to be whole again (a
                            restarted or replacement worker), then go on where
                            their streams were, their KV computed again: no
                            error, no repeated or missing token. Past it they
                            end with UNAVAILABLE; 0 ends them at once
                            (default 120)
  --no-prefix-caching       do not reuse KV blocks of common prompt prefixes
  --tokenizer DIR           the served model's tokenizer and chat template:
                            a directory holding tokenizer.json and
                            tokenizer_config.json (the model directory works).
                            Needed for text input, streamed text, stop
                            strings, Chat and Tokenize; without it requests
                            take token ids only. A worker whose vocabulary is
                            smaller than the tokenizer's is refused.

OpenAI-compatible HTTP API (off unless --http-listen is given):
  --http-listen ADDR        also serve OpenAI's HTTP API on ADDR (e.g. 0.0.0.0:8000):
                            POST /v1/chat/completions, POST /v1/completions,
                            GET /v1/models and GET /health (200 when ready,
                            503 while starting or draining). Its requests share
                            the queue, batching and limits of gRPC requests.
                            Text and chat need --tokenizer.
  --api-key-file FILE       clients of the HTTP API must send
                            "Authorization: Bearer KEY" with KEY one of the
                            lines of FILE, else 401 (GET /health stays open).
                            Without it the HTTP API is open to anyone who can
                            reach the port.

Expert parallelism:
  --ep-size N               worker ranks of the group; each holds a slice of the
                            experts and its own sequences; steps start once all N
                            are ready (default 1)
  --redundant-experts N     extra expert replicas in all, spread over the ranks,
                            when no --placement is given (default 0)
  --placement FILE          expert placement JSON (see `moeserve placement`):
                            {"ranks", "slots_per_rank", "experts", "layers"}
  --no-overlap              run each micro-batch's all-to-all inline instead of
                            overlapping it with the other micro-batch's compute
  --max-exchange-tokens N   the most tokens of one rank that one all-to-all
                            carries; it sizes every worker's exchange buffers
                            (per micro-batch: 4 x expert slots of the group x
                            N x hidden size x 4 bytes). Steps whose largest
                            rank has more tokens exchange them in rounds of N,
                            without overlap; smaller steps exchange less
                            (default 256)
  --communicator C          how the ranks exchange tokens: gloo (TCP; CPU workers,
                            or GPU workers staging through host memory) or nccl
                            (GPU workers built with NCCL) (default gloo)
  --communicator-timeout-seconds S  forming the group and each collective fail
                            after this long, so a lost rank cannot hang the
                            others (default 30)
  --group-timeout-seconds S how long ranks may take from Welcome to ready
                            (loading weights) before the group is formed again
                            (default 600)
  --expert-load-window-steps N  steps of expert loads behind the balancedness
                            metric and Admin's placement summary (default 1000)
  --emulated-link-latency-us US, --emulated-link-gbps GB
                            benchmarks only: make every all-to-all take at least
                            this latency plus bytes / bandwidth, to set the
                            comm:compute ratio of NVLink or InfiniBand on CPUs
)";

int Fail(const absl::Status& s) {
  std::cerr << "moeserve-coordinator: " << s.message() << "\n";
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

absl::StatusOr<std::string> ReadPem(const std::string& flag, const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": cannot read it"));
  std::stringstream text;
  text << in.rdbuf();
  if (text.str().find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": not a PEM file"));
  }
  return text.str();
}

// The two ports and who may use them (see kUsage).
struct Planes {
  std::string public_listen;
  std::shared_ptr<grpc::ServerCredentials> public_credentials;
  std::string internal_listen;
  std::shared_ptr<grpc::ServerCredentials> internal_credentials;
  std::string internal_token;  // empty only with mutual TLS
  std::string admin_token;     // empty: Admin is not served
  bool internal_mtls = false;
};

absl::StatusOr<Planes> ParsePlanes(const Args& args) {
  Planes p;
  p.public_listen = args.Get("listen").value_or("0.0.0.0:50051");
  p.internal_listen = args.Get("internal-listen").value_or("0.0.0.0:50052");
  const bool any_port = p.public_listen.size() >= 2 &&
                        p.public_listen.compare(p.public_listen.size() - 2, 2, ":0") == 0;
  if (p.internal_listen == p.public_listen && !any_port) {
    return absl::InvalidArgumentError(
        absl::StrCat("--internal-listen and --listen are both ", p.public_listen,
                     "; workers and Admin need a port of their own that clients cannot reach"));
  }
  p.public_credentials = grpc::InsecureServerCredentials();
  if (args.Has("tls-cert") != args.Has("tls-key")) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (args.Has("tls-cert")) {
    auto cert = ReadPem("--tls-cert", *args.Get("tls-cert"));
    if (!cert.ok()) return cert.status();
    auto key = ReadPem("--tls-key", *args.Get("tls-key"));
    if (!key.ok()) return key.status();
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    p.public_credentials = grpc::SslServerCredentials(ssl);
  }
  const int tls_flags = static_cast<int>(args.Has("internal-tls-cert")) +
                        static_cast<int>(args.Has("internal-tls-key")) +
                        static_cast<int>(args.Has("internal-tls-ca"));
  if (tls_flags != 0 && tls_flags != 3) {
    return absl::InvalidArgumentError(
        "--internal-tls-cert, --internal-tls-key and --internal-tls-ca go together (mutual TLS "
        "needs this server's certificate and key and the CA that signs the workers')");
  }
  p.internal_credentials = grpc::InsecureServerCredentials();
  if (tls_flags == 3) {
    auto cert = ReadPem("--internal-tls-cert", *args.Get("internal-tls-cert"));
    if (!cert.ok()) return cert.status();
    auto key = ReadPem("--internal-tls-key", *args.Get("internal-tls-key"));
    if (!key.ok()) return key.status();
    auto ca = ReadPem("--internal-tls-ca", *args.Get("internal-tls-ca"));
    if (!ca.ok()) return ca.status();
    grpc::SslServerCredentialsOptions ssl(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    ssl.pem_root_certs = *ca;
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    p.internal_credentials = grpc::SslServerCredentials(ssl);
    p.internal_mtls = true;
  }
  std::optional<std::string> token_file = args.Get("internal-token-file");
  if (!token_file.has_value()) {
    if (const char* env = std::getenv("MOESERVE_INTERNAL_TOKEN_FILE"); env != nullptr && *env) {
      token_file = env;
    }
  }
  if (token_file.has_value()) {
    auto token = ReadTokenFile("--internal-token-file", *token_file);
    if (!token.ok()) return token.status();
    p.internal_token = *std::move(token);
  } else if (!p.internal_mtls) {
    return absl::InvalidArgumentError(
        "the internal port needs a credential: give --internal-token-file FILE (and the same "
        "file to every worker's --internal-token-file), or mutual TLS with --internal-tls-cert, "
        "--internal-tls-key and --internal-tls-ca. Make a token with: "
        "head -c 32 /dev/urandom | base64 > FILE");
  }
  if (auto admin_file = args.Get("admin-token-file"); admin_file.has_value()) {
    auto token = ReadTokenFile("--admin-token-file", *admin_file);
    if (!token.ok()) return token.status();
    if (*token == p.internal_token) {
      return absl::InvalidArgumentError(
          "--admin-token-file holds the internal token; Admin needs a token of its own, so "
          "that a worker's secret cannot drain the service");
    }
    p.admin_token = *std::move(token);
  }
  return p;
}

int Main(const std::vector<std::string>& argv) {
  auto args = Args::Parse(argv,
                          {"listen",
                           "internal-listen",
                           "internal-token-file",
                           "internal-tls-cert",
                           "internal-tls-key",
                           "internal-tls-ca",
                           "admin-token-file",
                           "tls-cert",
                           "tls-key",
                           "metrics-port",
                           "max-batch-tokens",
                           "max-running-seqs",
                           "max-waiting",
                           "step-timeout-seconds",
                           "request-recovery-timeout-seconds",
                           "worker-heartbeat-seconds",
                           "ep-size",
                           "redundant-experts",
                           "placement",
                           "communicator",
                           "communicator-timeout-seconds",
                           "group-timeout-seconds",
                           "expert-load-window-steps",
                           "emulated-link-latency-us",
                           "emulated-link-gbps",
                           "tokenizer",
                           "max-exchange-tokens",
                           "http-listen",
                           "api-key-file"},
                          {"no-prefix-caching", "no-overlap", "help"});
  if (!args.ok()) return Fail(args.status());
  if (args->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  auto planes = ParsePlanes(*args);
  if (!planes.ok()) return Fail(planes.status());
  auto metrics_port = args->Int("metrics-port", 9400);
  auto batch_tokens = args->Int("max-batch-tokens", 2048);
  auto running = args->Int("max-running-seqs", 256);
  auto waiting = args->Int("max-waiting", 1024);
  auto timeout = args->Double("step-timeout-seconds", 60);
  auto recovery = args->Double("request-recovery-timeout-seconds", 120);
  auto heartbeat = args->Double("worker-heartbeat-seconds", 5);
  for (const absl::Status& s :
       {metrics_port.status(), batch_tokens.status(), running.status(), waiting.status(),
        timeout.status(), recovery.status(), heartbeat.status()}) {
    if (!s.ok()) return Fail(s);
  }
  if (!(*heartbeat >= 0) || *heartbeat > 3600) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "--worker-heartbeat-seconds must be in [0, 3600] (0 disables the heartbeat), got ",
        *heartbeat)));
  }
  if (!(*recovery >= 0)) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "--request-recovery-timeout-seconds must be >= 0 (0 ends requests at once when a "
        "worker is lost), got ",
        *recovery)));
  }
  if (*metrics_port < 0 || *metrics_port > 65535) {
    return Fail(absl::InvalidArgumentError("--metrics-port must be in [0, 65535]"));
  }
  if (*batch_tokens <= 0 || *running <= 0 || *waiting < 0 || !(*timeout > 0)) {
    return Fail(absl::InvalidArgumentError(
        "--max-batch-tokens, --max-running-seqs and --step-timeout-seconds must be positive, "
        "--max-waiting non-negative"));
  }

  auto ep_size = args->Int("ep-size", 1);
  auto redundant = args->Int("redundant-experts", 0);
  auto comm_timeout = args->Double("communicator-timeout-seconds", 30);
  auto group_timeout = args->Double("group-timeout-seconds", 600);
  auto window = args->Int("expert-load-window-steps", 1000);
  auto latency = args->Double("emulated-link-latency-us", 0);
  auto gbps = args->Double("emulated-link-gbps", 0);
  auto exchange_tokens = args->Int("max-exchange-tokens", 256);
  for (const absl::Status& s :
       {ep_size.status(), redundant.status(), comm_timeout.status(), group_timeout.status(),
        window.status(), latency.status(), gbps.status(), exchange_tokens.status()}) {
    if (!s.ok()) return Fail(s);
  }
  if (*exchange_tokens <= 0 || *exchange_tokens > (int64_t{1} << 24)) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--max-exchange-tokens must be in [1, 16777216], got ", *exchange_tokens)));
  }
  if (*ep_size < 1 || *ep_size > 4096) {
    return Fail(
        absl::InvalidArgumentError(absl::StrCat("--ep-size must be in [1, 4096], got ", *ep_size)));
  }
  if (*redundant < 0 || *redundant > 65536) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--redundant-experts must be in [0, 65536], got ", *redundant)));
  }
  if (!(*comm_timeout > 0) || !(*group_timeout > 0) || *window < 1 || !(*latency >= 0) ||
      !(*gbps >= 0)) {
    return Fail(absl::InvalidArgumentError(
        "--communicator-timeout-seconds, --group-timeout-seconds and "
        "--expert-load-window-steps must be positive, the emulated link non-negative"));
  }
  std::optional<scheduler::Placement> placement;
  if (auto path = args->Get("placement"); path.has_value()) {
    std::ifstream in(*path);
    if (!in)
      return Fail(absl::InvalidArgumentError(absl::StrCat("cannot read --placement ", *path)));
    std::stringstream text;
    text << in.rdbuf();
    auto parsed = scheduler::ParsePlacementJson(text.str());
    if (!parsed.ok()) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(*path, ": ", parsed.status().message())));
    }
    if (parsed->ranks != *ep_size) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          *path, " places experts on ", parsed->ranks, " ranks but --ep-size is ", *ep_size)));
    }
    placement = *std::move(parsed);
  }

  std::shared_ptr<const TextFrontend> text;
  if (auto dir = args->Get("tokenizer"); dir.has_value()) {
    auto loaded = TextFrontend::Load(*dir);
    if (!loaded.ok()) {
      // Bad or missing files are the operator's input: exit 2 like a bad flag.
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--tokenizer ", *dir, ": ", loaded.status().message())));
    }
    text = *std::move(loaded);
    std::cerr << "moeserve-coordinator: tokenizer from " << *dir << " ("
              << text->tokenizer().vocab_size() << " tokens), "
              << (text->has_chat_template() ? "with" : "without") << " a chat template\n";
  }

  OpenAiApi::Options openai_options;
  if (auto path = args->Get("api-key-file"); path.has_value()) {
    auto keys = ReadApiKeyFile(*path);
    if (!keys.ok()) return Fail(keys.status());
    if (!args->Has("http-listen")) {
      return Fail(absl::InvalidArgumentError("--api-key-file needs --http-listen"));
    }
    openai_options.api_keys = *std::move(keys);
  }

  // Block the stop signals in every thread; the main thread waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  CoordinatorMetrics metrics;
  std::unique_ptr<prometheus::Exposer> exposer;
  if (*metrics_port > 0) {
    try {
      exposer = std::make_unique<prometheus::Exposer>(absl::StrCat("0.0.0.0:", *metrics_port));
    } catch (const std::exception& e) {
      return Fail(absl::UnavailableError(
          absl::StrCat("cannot serve metrics on port ", *metrics_port, ": ", e.what())));
    }
    exposer->RegisterCollectable(metrics.registry());
  }

  EngineLoop::Options options;
  options.batcher.max_batch_tokens = *batch_tokens;
  options.batcher.max_running_seqs = *running;
  options.batcher.max_waiting = *waiting;
  options.batcher.enable_prefix_caching = !args->Has("no-prefix-caching");
  options.step_timeout = absl::Seconds(*timeout);
  options.recovery_timeout = absl::Seconds(*recovery);
  options.ep_size = static_cast<int32_t>(*ep_size);
  options.redundant_experts = static_cast<int32_t>(*redundant);
  options.communicator = args->Get("communicator").value_or("gloo");
  if (options.communicator != "gloo" && options.communicator != "nccl") {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--communicator must be gloo or nccl, got \"", options.communicator, "\"")));
  }
  options.placement = placement;
  options.overlap = !args->Has("no-overlap");
  options.max_exchange_tokens = *exchange_tokens;
  options.communicator_timeout = absl::Seconds(*comm_timeout);
  options.group_timeout = absl::Seconds(*group_timeout);
  options.expert_load_window_steps = *window;
  options.emulated_link_latency_us = *latency;
  options.emulated_link_gbps = *gbps;

  std::atomic<grpc::Server*> serving_server{nullptr};
  std::atomic<bool> draining{false};
  auto set_serving = [&serving_server, &draining](bool serving) {
    grpc::Server* server = serving_server.load();
    if (server != nullptr && server->GetHealthCheckService() != nullptr) {
      server->GetHealthCheckService()->SetServingStatus(serving && !draining.load());
    }
  };
  options.on_ready_changed = set_serving;
  options.log = [](const std::string& line) {
    std::cerr << "moeserve-coordinator: " << line << std::endl;
  };
  // Declared before the loop, so destroyed after it: requests the loop still
  // holds at exit point into the HTTP server's connections.
  std::unique_ptr<HttpServer> http_server;
  EngineLoop loop(options, metrics);
  InferenceService inference(loop, metrics, text);
  AdminService admin(loop, TokenCheck(planes->admin_token, "Admin service", "--admin-token-file"),
                     [&] {
                       draining = true;
                       set_serving(false);
                     });
  CoordinatorService coordinator(
      loop, TokenCheck(planes->internal_token, "internal port", "--internal-token-file"), text);

  // The internal server is built first: before health checking and the
  // reflection plugin are switched on for every server built afterwards, so
  // the internal port answers neither (nothing there is for outsiders).
  grpc::ServerBuilder internal_builder;
  int internal_port = 0;
  internal_builder.AddListeningPort(planes->internal_listen, planes->internal_credentials,
                                    &internal_port);
  internal_builder.SetMaxReceiveMessageSize(64 << 20);
  if (*heartbeat > 0) {
    // HTTP/2 pings, answered by the worker's gRPC threads, not by its kernel:
    // a stopped or hung worker process misses them, and the transport closes.
    const int ms = std::max(1, static_cast<int>(*heartbeat * 1000));
    internal_builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, ms);
    internal_builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms);
    internal_builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    // Between steps, and while a stopped worker sends nothing, its stream
    // carries no data: keep pinging anyway, at the heartbeat's period.
    internal_builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    internal_builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_SENT_PING_INTERVAL_WITHOUT_DATA_MS, ms);
  }
  internal_builder.RegisterService(&coordinator);
  if (!planes->admin_token.empty()) internal_builder.RegisterService(&admin);
  std::unique_ptr<grpc::Server> internal_server = internal_builder.BuildAndStart();
  if (internal_server == nullptr || internal_port == 0) {
    return Fail(absl::UnavailableError(
        absl::StrCat("cannot listen on --internal-listen ", planes->internal_listen)));
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(planes->public_listen, planes->public_credentials, &bound_port);
  builder.SetMaxReceiveMessageSize(64 << 20);
  builder.RegisterService(&inference);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || bound_port == 0) {
    return Fail(absl::UnavailableError(absl::StrCat("cannot listen on ", planes->public_listen)));
  }
  serving_server = server.get();
  set_serving(loop.ready());
  const bool api_key_required = !openai_options.api_keys.empty();
  OpenAiApi openai(loop, metrics, text, std::move(openai_options));
  if (auto http_listen = args->Get("http-listen"); http_listen.has_value()) {
    HttpServer::Options http_options;
    http_options.listen = *http_listen;
    auto started = HttpServer::Start(
        http_options,
        [&openai](const HttpRequest& request, std::shared_ptr<HttpExchange> exchange) {
          openai.Handle(request, std::move(exchange));
        });
    if (!started.ok()) return Fail(started.status());
    http_server = *std::move(started);
    std::cerr << "moeserve-coordinator: OpenAI-compatible HTTP API on " << *http_listen << " (port "
              << http_server->port() << ")" << (api_key_required ? ", API key required" : "")
              << "\n";
  }
  std::cerr << "moeserve-coordinator: serving clients on " << planes->public_listen << " (port "
            << bound_port << (args->Has("tls-cert") ? ", TLS" : ", plaintext") << "), workers"
            << (planes->admin_token.empty() ? "" : " and Admin") << " on "
            << planes->internal_listen << " (port " << internal_port << ", "
            << (planes->internal_mtls ? "mutual TLS" : "plaintext")
            << (planes->internal_token.empty() ? "" : " with a token") << ")"
            << (planes->admin_token.empty() ? "; Admin is off (no --admin-token-file)" : "")
            << (*metrics_port > 0 ? absl::StrCat(", metrics on :", *metrics_port) : "")
            << "; waiting for " << *ep_size << (*ep_size == 1 ? " worker" : " worker ranks")
            << "\n";

  int signal = 0;
  sigwait(&stop_signals, &signal);
  std::cerr << "moeserve-coordinator: stopping on signal " << signal << "\n";
  set_serving(false);
  serving_server = nullptr;
  if (http_server != nullptr) http_server->Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  internal_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return 0;
}

}  // namespace
}  // namespace moeserve

int main(int argc, char** argv) {
  return moeserve::Main(std::vector<std::string>(argv + 1, argv + argc));
}
