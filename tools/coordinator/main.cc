// moeserve-coordinator: the gRPC front door. Admits requests, batches them
// continuously and drives the worker that registers with it.
#include <csignal>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "prometheus/exposer.h"
#include "scheduler/server/engine_loop.h"
#include "scheduler/server/metrics.h"
#include "scheduler/server/services.h"
#include "tools/moeserve/args.h"

namespace moeserve {
namespace {

constexpr char kUsage[] = R"(Usage: moeserve-coordinator [flags]

Serves the moeserve gRPC API (moeserve.v1.Inference, moeserve.v1.Admin,
grpc.health.v1 health, server reflection) and the worker protocol on one
port. Health is NOT_SERVING until a worker has registered and while draining.

  --listen ADDR             address to serve gRPC on (default 0.0.0.0:50051)
  --metrics-port N          Prometheus /metrics port, 0 to disable (default 9400)
  --max-batch-tokens N      tokens per engine step, prefill and decode (default 2048)
  --max-running-seqs N      sequences in the running batch at most (default 256)
  --max-waiting N           requests waiting beyond the running ones; more get
                            RESOURCE_EXHAUSTED (default 1024)
  --step-timeout-seconds S  a worker that takes longer for one step is lost (default 60)
  --no-prefix-caching       do not reuse KV blocks of common prompt prefixes
)";

int Fail(const absl::Status& s) {
  std::cerr << "moeserve-coordinator: " << s.message() << "\n";
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

int Main(const std::vector<std::string>& argv) {
  auto args = Args::Parse(argv,
                          {"listen", "metrics-port", "max-batch-tokens", "max-running-seqs",
                           "max-waiting", "step-timeout-seconds"},
                          {"no-prefix-caching", "help"});
  if (!args.ok()) return Fail(args.status());
  if (args->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  const std::string listen = args->Get("listen").value_or("0.0.0.0:50051");
  auto metrics_port = args->Int("metrics-port", 9400);
  auto batch_tokens = args->Int("max-batch-tokens", 2048);
  auto running = args->Int("max-running-seqs", 256);
  auto waiting = args->Int("max-waiting", 1024);
  auto timeout = args->Double("step-timeout-seconds", 60);
  for (const absl::Status& s : {metrics_port.status(), batch_tokens.status(), running.status(),
                                waiting.status(), timeout.status()}) {
    if (!s.ok()) return Fail(s);
  }
  if (*metrics_port < 0 || *metrics_port > 65535) {
    return Fail(absl::InvalidArgumentError("--metrics-port must be in [0, 65535]"));
  }
  if (*batch_tokens <= 0 || *running <= 0 || *waiting < 0 || !(*timeout > 0)) {
    return Fail(absl::InvalidArgumentError(
        "--max-batch-tokens, --max-running-seqs and --step-timeout-seconds must be positive, "
        "--max-waiting non-negative"));
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
  EngineLoop loop(options, metrics);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::unique_ptr<grpc::Server> server;
  auto set_serving = [&server, &loop](bool serving) {
    if (server != nullptr && server->GetHealthCheckService() != nullptr) {
      server->GetHealthCheckService()->SetServingStatus(serving && !loop.draining());
    }
  };
  InferenceService inference(loop, metrics);
  AdminService admin(loop, [&] { set_serving(false); });
  CoordinatorService coordinator(
      loop, [&] { set_serving(true); }, [&] { set_serving(false); });
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &bound_port);
  builder.SetMaxReceiveMessageSize(64 << 20);
  builder.RegisterService(&inference);
  builder.RegisterService(&admin);
  builder.RegisterService(&coordinator);
  server = builder.BuildAndStart();
  if (server == nullptr || bound_port == 0) {
    return Fail(absl::UnavailableError(absl::StrCat("cannot listen on ", listen)));
  }
  set_serving(false);
  std::cerr << "moeserve-coordinator: serving on " << listen << " (port " << bound_port << ")"
            << (*metrics_port > 0 ? absl::StrCat(", metrics on :", *metrics_port) : "")
            << "; waiting for a worker\n";

  int signal = 0;
  sigwait(&stop_signals, &signal);
  std::cerr << "moeserve-coordinator: stopping on signal " << signal << "\n";
  set_serving(false);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return 0;
}

}  // namespace
}  // namespace moeserve

int main(int argc, char** argv) {
  return moeserve::Main(std::vector<std::string>(argv + 1, argv + argc));
}
