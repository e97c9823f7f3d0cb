// moeserve-worker: one worker process of a moeserve deployment. Loads a model,
// registers with the coordinator and executes the steps it plans.
//
//   moeserve-worker --coordinator localhost:50052 --model DIR
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/worker/worker.h"
#include "tools/moeserve/args.h"

namespace moeserve {
namespace {

constexpr char kUsage[] = R"(Usage: moeserve-worker --coordinator ADDR --model DIR [flags]

Runs one worker of a moeserve deployment: loads the model (CPU), connects to
the coordinator, registers with its KV cache capacity, then executes the steps
the coordinator plans until it is told to shut down.

  --coordinator ADDR         host:port of the coordinator's worker endpoint (required)
  --model DIR                Hugging Face checkpoint directory: config.json and
                             safetensors; the coordinator must serve the same model
                             (required)
  --kv-cache-tokens N        KV cache capacity in tokens, rounded up to whole
                             blocks of 64 (default 16384)
  --worker-id ID             identity reported to the coordinator, e.g. the pod name
                             (default HOSTNAME:PID)
  --rank N                   the rank to ask the coordinator for, e.g. the pod
                             ordinal; -1 lets the coordinator choose (default -1)
  --connect-timeout-seconds S  how long to wait for the coordinator to accept the
                             connection before giving up (default 5)
  --help                     show this text

Exit status: 0 after the coordinator's Shutdown, 1 when the model cannot be
loaded, the coordinator cannot be reached or the connection is lost, 2 for bad
flags. Progress and errors go to stderr.
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
  if (!args.positional().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unexpected argument \"", args.positional()[0], "\" (see --help)"));
  }
  return o;
}

int Main(const std::vector<std::string>& argv) {
  auto args = Args::Parse(
      argv,
      {"coordinator", "model", "kv-cache-tokens", "worker-id", "rank", "connect-timeout-seconds"},
      {"help"});
  if (!args.ok()) return BadFlags(args.status());
  if (args->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  auto options = ParseFlags(*args);
  if (!options.ok()) return BadFlags(options.status());
  options->log = [](const std::string& line) { std::cerr << kPrefix << line << std::endl; };

  auto worker = Worker::Create(*options);
  if (!worker.ok()) {
    std::cerr << kPrefix << "cannot load the model from " << options->model_dir << ": "
              << worker.status().message() << "\n";
    return 1;
  }
  const ModelConfig& c = (*worker)->config();
  std::cerr << kPrefix << "loaded " << c.model_type << " from " << options->model_dir
            << " (vocabulary " << c.vocab_size << "), KV cache " << (*worker)->kv_num_blocks()
            << " blocks of " << options->kv_block_tokens << " tokens; worker id "
            << options->worker_id << std::endl;
  const absl::Status status = (*worker)->Run();
  if (!status.ok()) {
    std::cerr << kPrefix << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace moeserve

int main(int argc, char** argv) {
  return moeserve::Main(std::vector<std::string>(argv + 1, argv + argc));
}
