// moeserve-worker: one worker process of a moeserve deployment. Loads a model,
// registers with the coordinator and executes the steps it plans.
//
//   moeserve-worker --coordinator localhost:50052 --internal-token-file FILE --model DIR
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/backend_factory.h"
#include "runtime/kv_cache/kv_cache_dtype.h"
#include "runtime/worker/worker.h"
#include "tools/moeserve/args.h"

namespace moeserve {
namespace {

constexpr char kUsage[] = R"(Usage: moeserve-worker --coordinator ADDR --model DIR [flags]

Runs one worker of a moeserve deployment: checks the model (CPU), connects to
the coordinator and registers with its KV cache capacity; once the coordinator
has assigned its rank and expert placement, loads its weights, joins the
expert-parallel group and executes the steps the coordinator plans until it is
told to shut down. When the group breaks (another rank was lost) or the
coordinator restarts, it registers again, keeping its weights.

  --coordinator ADDR         host:port of the coordinator's internal port (its
                             --internal-listen, default port 50052), not the
                             public one clients use (required)
  --internal-token-file FILE the coordinator's internal token (its
                             --internal-token-file), sent with every call.
                             Default: $MOESERVE_INTERNAL_TOKEN_FILE
  --internal-tls-ca FILE     connect over TLS and accept only a coordinator
                             whose certificate this PEM CA signed
  --internal-tls-cert FILE, --internal-tls-key FILE  this worker's PEM client
                             certificate chain and key, for a coordinator that
                             requires mutual TLS (both or neither; need
                             --internal-tls-ca)
  --internal-tls-server-name NAME  the name the coordinator's certificate must
                             carry, when --coordinator is an IP or another name
                             (default: the host of --coordinator)
  --model DIR                Hugging Face checkpoint directory: config.json and
                             safetensors; the coordinator must serve the same model
                             (required)
  --kv-cache-tokens N        KV cache capacity in tokens, rounded up to whole
                             blocks of 64 (default 16384)
  --kv-cache-dtype D         how the KV cache stores keys: auto, fp32, bf16 or fp8
                             (fp8: e4m3 with float32 scales, FlashMLA's layout for
                             MLA). auto picks fp32 on the CPU (exact) and bf16 on
                             CUDA (default auto)
  --device D                 where the model runs: cpu, or cuda / cuda:N for GPU N
                             of this machine (default cpu)
  --no-cuda-graphs           on CUDA, run every decode step eagerly instead of
                             replaying a CUDA graph captured once per batch-size
                             bucket (1, 2, 4, ... 256 sequences); for comparing
  --worker-id ID             identity reported to the coordinator, e.g. the pod name
                             (default HOSTNAME:PID)
  --rank N                   the rank to ask the coordinator for, e.g. pod ordinal
                             x GPUs per pod + local GPU; -1 lets the coordinator
                             choose (default -1)
  --ep-size N                the coordinator's --ep-size; a group of another size
                             is refused (default: accept the coordinator's)
  --communicator-host HOST   address the other ranks reach this worker at for
                             expert-parallel traffic, e.g. the pod IP
                             (default 127.0.0.1)
  --reconnect-seconds S      after losing the coordinator, or when it answers that
                             every rank is taken (perhaps by a worker this one
                             replaces that it has not yet found gone), keep
                             trying to register for this long before exiting
                             (default 60; 0 exits at once)
  --connect-timeout-seconds S  how long to wait for the coordinator to accept the
                             connection before giving up (default 5)
  --null-model-for-benchmarks  measure the serving path alone: load no weights
                             and run no layer; every token is a fixed function of
                             the one before and its position. Its output means
                             nothing; every rank of a group must use it
                             (moeserve bench, docs/performance.md)
  --help                     show this text

Exit status: 0 after the coordinator's Shutdown, 1 when the model cannot be
loaded, the coordinator cannot be reached at start or refuses the token, or the
connection stays lost for --reconnect-seconds, 2 for bad flags. Progress and errors go to stderr.
)";

constexpr char kPrefix[] = "moeserve-worker: ";

int BadFlags(const absl::Status& status) {
  std::cerr << kPrefix << status.message();
  if (status.message().find("--help") == absl::string_view::npos) std::cerr << " (see --help)";
  std::cerr << "\n";
  return 2;
}

std::string DefaultWorkerId() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return absl::StrCat(host[0] != '\0' ? host : "localhost", ":", getpid());
}

absl::StatusOr<std::string> ReadFile(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": cannot read it"));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<InternalPlaneCredentials> ParseCredentials(const Args& args) {
  InternalPlaneCredentials c;
  std::optional<std::string> token_file = args.Get("internal-token-file");
  if (!token_file.has_value()) {
    if (const char* env = std::getenv("MOESERVE_INTERNAL_TOKEN_FILE"); env != nullptr && *env) {
      token_file = env;
    }
  }
  if (token_file.has_value()) {
    auto token = ReadFile("--internal-token-file", *token_file);
    if (!token.ok()) return token.status();
    c.token = *std::move(token);
    // As the coordinator reads it: without the trailing newline of `echo`.
    while (!c.token.empty() && std::isspace(static_cast<unsigned char>(c.token.back()))) {
      c.token.pop_back();
    }
    if (c.token.empty() || c.token.find_first_of("\r\n") != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("--internal-token-file ", *token_file, ": empty, or more than one line"));
    }
  }
  if (args.Has("internal-tls-cert") != args.Has("internal-tls-key")) {
    return absl::InvalidArgumentError("--internal-tls-cert and --internal-tls-key go together");
  }
  if (args.Has("internal-tls-cert") && !args.Has("internal-tls-ca")) {
    return absl::InvalidArgumentError(
        "--internal-tls-cert needs --internal-tls-ca (the CA of the coordinator's certificate)");
  }
  for (auto [flag, pem] : {std::pair{"internal-tls-ca", &c.tls_ca_pem},
                           std::pair{"internal-tls-cert", &c.tls_cert_pem},
                           std::pair{"internal-tls-key", &c.tls_key_pem}}) {
    if (!args.Has(flag)) continue;
    auto text = ReadFile(absl::StrCat("--", flag), *args.Get(flag));
    if (!text.ok()) return text.status();
    *pem = *std::move(text);
  }
  c.tls_server_name = args.Get("internal-tls-server-name").value_or("");
  return c;
}

absl::StatusOr<Worker::Options> ParseFlags(const Args& args) {
  Worker::Options o;
  auto coordinator = args.Required("coordinator");
  if (!coordinator.ok()) return coordinator.status();
  o.coordinator_address = *coordinator;
  auto model = args.Required("model");
  if (!model.ok()) return model.status();
  o.model_dir = *model;
  auto kv_tokens = args.Int("kv-cache-tokens", 16384);
  if (!kv_tokens.ok()) return kv_tokens.status();
  if (*kv_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--kv-cache-tokens must be positive, got ", *kv_tokens));
  }
  o.kv_cache_tokens = *kv_tokens;
  auto kv_dtype = ParseKvCacheDtype(args.Get("kv-cache-dtype").value_or("auto"));
  if (!kv_dtype.ok()) return kv_dtype.status();
  o.kv_cache_dtype = *kv_dtype;
  auto device = ParseDeviceId(args.Get("device").value_or("cpu"));
  if (!device.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--device: ", device.status().message()));
  }
  o.device = *device;
  o.model.graphs = o.device.kind == DeviceKind::kCuda && !args.Has("no-cuda-graphs");
  o.null_model_for_benchmarks = args.Has("null-model-for-benchmarks");
  o.worker_id = args.Get("worker-id").value_or(DefaultWorkerId());
  if (o.worker_id.empty()) return absl::InvalidArgumentError("--worker-id is empty");
  auto rank = args.Int("rank", -1);
  if (!rank.ok()) return rank.status();
  if (*rank < -1 || *rank > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("--rank must be -1 (any) or a rank >= 0, got ", *rank));
  }
  o.requested_rank = static_cast<int32_t>(*rank);
  auto timeout = args.Double("connect-timeout-seconds", 5.0);
  if (!timeout.ok()) return timeout.status();
  if (!(*timeout > 0.0 && *timeout <= 86400.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--connect-timeout-seconds must be in (0, 86400], got ", *timeout));
  }
  o.connect_timeout = std::chrono::milliseconds(static_cast<int64_t>(*timeout * 1000.0 + 0.5));
  if (o.connect_timeout.count() == 0) o.connect_timeout = std::chrono::milliseconds(1);
  auto ep_size = args.Int("ep-size", 0);
  if (!ep_size.ok()) return ep_size.status();
  if (*ep_size < 0 || *ep_size > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("--ep-size must be in [1, 4096], got ", *ep_size));
  }
  if (*ep_size > 0 && o.requested_rank >= *ep_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("--rank ", o.requested_rank, " is outside a group of --ep-size ", *ep_size));
  }
  o.expected_world_size = static_cast<int32_t>(*ep_size);
  auto credentials = ParseCredentials(args);
  if (!credentials.ok()) return credentials.status();
  o.credentials = *std::move(credentials);
  o.communicator_host = args.Get("communicator-host").value_or("127.0.0.1");
  if (o.communicator_host.empty())
    return absl::InvalidArgumentError("--communicator-host is empty");
  if (!args.positional().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unexpected argument \"", args.positional()[0], "\" (see --help)"));
  }
  return o;
}

int Main(const std::vector<std::string>& argv) {
  auto args = Args::Parse(argv,
                          {"coordinator", "model", "kv-cache-tokens", "kv-cache-dtype", "device",
                           "worker-id", "rank", "connect-timeout-seconds", "communicator-host",
                           "reconnect-seconds", "ep-size", "internal-token-file", "internal-tls-ca",
                           "internal-tls-cert", "internal-tls-key", "internal-tls-server-name"},
                          {"help", "no-cuda-graphs", "null-model-for-benchmarks"});
  if (!args.ok()) return BadFlags(args.status());
  if (args->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  auto options = ParseFlags(*args);
  if (!options.ok()) return BadFlags(options.status());
  auto reconnect = args->Double("reconnect-seconds", 60.0);
  if (!reconnect.ok()) return BadFlags(reconnect.status());
  if (!(*reconnect >= 0.0 && *reconnect <= 86400.0)) {
    return BadFlags(absl::InvalidArgumentError(
        absl::StrCat("--reconnect-seconds must be in [0, 86400], got ", *reconnect)));
  }
  options->log = [](const std::string& line) { std::cerr << kPrefix << line << std::endl; };

  // The device must be usable before this worker offers itself to a group.
  if (auto backend = CreateBackend(options->device); !backend.ok()) {
    std::cerr << kPrefix << backend.status().message() << "\n";  // it names the device
    return 1;
  }
  auto worker = Worker::Create(*options);
  if (!worker.ok()) {
    std::cerr << kPrefix << "cannot load the model from " << options->model_dir << ": "
              << worker.status().message() << "\n";
    return 1;
  }
  const ModelConfig& c = (*worker)->config();
  std::cerr << kPrefix << "checked " << c.model_type << " in " << options->model_dir
            << " (vocabulary " << c.vocab_size << "), KV cache " << (*worker)->kv_num_blocks()
            << " blocks of " << options->kv_block_tokens << " tokens ("
            << KvCacheDtypeName((*worker)->kv_cache_dtype()) << ", "
            << (*worker)->kv_cache_bytes() / (1 << 20) << " MiB); worker id " << options->worker_id
            << std::endl;
  // A broken session (the group re-forming after a lost rank, a coordinator
  // restart) is followed by a new registration; the weights stay loaded.
  auto lost_since = std::chrono::steady_clock::now();
  bool refused = false;  // refused since the last other outcome, from refused_since
  auto refused_since = std::chrono::steady_clock::now();
  bool ever_joined = false;
  for (;;) {
    const absl::Status status = (*worker)->Run();
    if (status.ok()) return 0;
    std::cerr << kPrefix << status.message() << "\n";
    // Every rank taken, perhaps by a worker this one replaces that the
    // coordinator has not yet dropped (within two of its heartbeats).
    if (status.code() == absl::StatusCode::kAlreadyExists) {
      const auto now = std::chrono::steady_clock::now();
      if (!refused) refused_since = now;
      refused = true;
      if (std::chrono::duration<double>(now - refused_since).count() >= *reconnect) return 1;
      std::cerr << kPrefix << "registering again in 1 s (giving up after " << *reconnect
                << " s of refusals)" << std::endl;
      std::this_thread::sleep_for(std::chrono::seconds(1));
      continue;
    }
    refused = false;
    // Never part of a group: a wrong address or a refused registration.
    if (status.code() != absl::StatusCode::kUnavailable) return 1;
    if ((*worker)->joined_group_in_last_run()) {
      ever_joined = true;
      lost_since = std::chrono::steady_clock::now();
    }
    if (!ever_joined) return 1;
    const double lost =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - lost_since).count();
    if (lost >= *reconnect) return 1;
    std::cerr << kPrefix << "registering again (giving up after " << *reconnect
              << " s without the coordinator)" << std::endl;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

}  // namespace
}  // namespace moeserve

int main(int argc, char** argv) {
  return moeserve::Main(std::vector<std::string>(argv + 1, argv + argc));
}
