// The worker process's core: one model on the CPU op set, its paged KV cache,
// and the session with the coordinator (proto/moeserve/worker/v1/worker.proto)
// that turns each StepPlan into one StepExecutor::Run and answers it with a
// StepResult.
//
// The coordinator owns all request state and KV block allocation; the worker
// owns tensors and executes exactly what each plan says.
#ifndef MOESERVE_RUNTIME_WORKER_WORKER_H_
#define MOESERVE_RUNTIME_WORKER_WORKER_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/engine/model_runner.h"

namespace moeserve {

// Not thread safe: create it, then call Run on one thread.
class Worker {
 public:
  struct Options {
    std::string coordinator_address;  // host:port of the coordinator's worker endpoint
    std::string model_dir;            // Hugging Face checkpoint directory
    int64_t kv_cache_tokens = 16384;  // KV capacity, rounded up to whole blocks
    int64_t kv_block_tokens = kDefaultKvBlockTokens;
    std::string worker_id;        // stable identity reported at registration (pod name, host:pid)
    int32_t requested_rank = -1;  // the rank to ask for (e.g. a pod ordinal), or -1 for any
    // How long Run waits for the coordinator to accept the connection.
    std::chrono::milliseconds connect_timeout{5000};
    ModelOptions model;
    // Receives one-line events an operator wants to see (connected, rank
    // assigned, a step that failed, shutdown), on the Run thread. May be empty.
    std::function<void(const std::string&)> log;
  };

  // Loads the checkpoint and the model with the CPU op set and allocates the
  // KV cache. InvalidArgument for bad options; the checkpoint's errors as
  // they come.
  static absl::StatusOr<std::unique_ptr<Worker>> Create(const Options& options);

  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker();

  // Connects to the coordinator, registers, waits for Welcome and then serves
  // StepPlans until the session ends:
  //   OK           the coordinator sent Shutdown;
  //   Unavailable  the coordinator cannot be reached within connect_timeout,
  //                or the stream broke or was closed without Shutdown;
  //   FailedPrecondition  the coordinator broke the protocol (a plan before
  //                Welcome, a second Welcome, an invalid Welcome).
  // A malformed plan or a failing step does not end the session: its
  // StepResult carries the error and the next plan is served. Run may be
  // called again after it returns; that is a new registration.
  absl::Status Run();

  const ModelConfig& config() const { return runner_->config(); }
  int64_t kv_num_blocks() const { return runner_->cache().options().num_blocks; }

 private:
  class Session;  // one connection to the coordinator; defined in worker.cc

  Worker() = default;
  void Log(const std::string& line) const;

  Options options_;
  std::unique_ptr<ModelRunner> runner_;
};

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_WORKER_WORKER_H_
