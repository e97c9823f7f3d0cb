// The worker process's core: one model on the CPU op set, its paged KV cache,
// its place in an expert-parallel group, and the session with the coordinator
// (proto/moeserve/worker/v1/worker.proto) that turns each StepPlan into one
// StepExecutor::Run and answers it with a StepResult.
//
// The weights are loaded once the coordinator's Welcome says which experts
// this rank holds; a group formed again with the same placement (after a
// lost rank) keeps them and only forms a new communicator.
//
// The coordinator owns all request state and KV block allocation; the worker
// owns tensors and executes exactly what each plan says.
#ifndef MOESERVE_RUNTIME_WORKER_WORKER_H_
#define MOESERVE_RUNTIME_WORKER_WORKER_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "runtime/engine/model_runner.h"
#include "runtime/parallel/communicator.h"
#include "runtime/worker/coordinator_channel.h"
#include "runtime/worker/group_setup.h"
#include "runtime/worker/step_plan_conversion.h"

namespace grpc {
class Channel;
}

namespace moeserve {

// Not thread safe: create it, then call Run on one thread.
class Worker {
 public:
  struct Options {
    std::string coordinator_address;  // host:port of the coordinator's internal port
    // The internal plane's token and TLS material (--internal-token-file,
    // --internal-tls-*), sent on every call to the coordinator.
    InternalPlaneCredentials credentials;
    std::string model_dir;            // Hugging Face checkpoint directory
    int64_t kv_cache_tokens = 16384;  // KV capacity, rounded up to whole blocks
    int64_t kv_block_tokens = kDefaultKvBlockTokens;
    KvCacheDtypeChoice kv_cache_dtype;  // --kv-cache-dtype (auto: fp32 on the CPU)
    std::string worker_id;        // stable identity reported at registration (pod name, host:pid)
    int32_t requested_rank = -1;  // the rank to ask for (e.g. a pod ordinal), or -1 for any
    // The group size this worker was deployed for; a Welcome for another
    // size is refused. 0 accepts any.
    int32_t expected_world_size = 0;
    // How long Run waits for the coordinator to accept the connection.
    std::chrono::milliseconds connect_timeout{5000};
    // Address the other ranks reach this one at for expert-parallel traffic
    // (its pod IP on Kubernetes).
    std::string communicator_host = "127.0.0.1";
    ModelOptions model;
    // Benchmarks of the serving path only (--null-model-for-benchmarks):
    // no weights, no forward pass, meaningless tokens (ModelRunner).
    bool null_model_for_benchmarks = false;
    DeviceId device;  // --device: where the model runs
    // Receives one-line events an operator wants to see (connected, rank
    // assigned, a step that failed, shutdown), on the Run thread. May be empty.
    std::function<void(const std::string&)> log;
  };

  // Opens and checks the checkpoint and its config; the weights are loaded
  // after Welcome. InvalidArgument for bad options; the checkpoint's errors
  // as they come.
  static absl::StatusOr<std::unique_ptr<Worker>> Create(const Options& options);

  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker();

  // Connects to the coordinator, registers, waits for Welcome and then serves
  // StepPlans until the session ends:
  //   OK           the coordinator sent Shutdown;
  //   Unavailable  the coordinator cannot be reached within connect_timeout,
  //                or the stream broke or was closed without Shutdown;
  //   Unauthenticated  the coordinator refused the token or certificate;
  //   FailedPrecondition  the address is not a coordinator's internal port
  //                (UNIMPLEMENTED), or the coordinator broke the protocol (a plan before
  //                Welcome, a second Welcome, an invalid Welcome);
  //   the model's or the group's error when the weights cannot be loaded or
  //                the group cannot be formed (the coordinator is told in Ready).
  // A malformed plan or a failing step does not end the session: its
  // StepResult carries the error and the next plan is served. Run may be
  // called again after it returns; that is a new registration.
  absl::Status Run();

  const ModelConfig& config() const { return config_; }
  int64_t kv_num_blocks() const {
    return CeilDiv(options_.kv_cache_tokens, options_.kv_block_tokens);
  }
  // The KV cache's dtype (auto resolved for the device) and the bytes it
  // allocates once the weights are loaded.
  KvCacheDtype kv_cache_dtype() const {
    return ResolveKvCacheDtype(options_.kv_cache_dtype, options_.device.kind == DeviceKind::kCuda
                                                            ? KvCacheDevice::kCuda
                                                            : KvCacheDevice::kCpu);
  }
  int64_t kv_cache_bytes() const {
    return config_.num_hidden_layers * kv_num_blocks() * options_.kv_block_tokens *
           config_.kv_cache_row(kv_cache_dtype()).row_bytes();
  }
  // Whether the last Run joined a group (welcomed, weights loaded, Ready sent).
  bool joined_group_in_last_run() const { return joined_group_in_last_run_; }

 private:
  class Session;  // one connection to the coordinator; defined in worker.cc

  Worker() = default;
  void Log(const std::string& line) const;

  // Loads the model for `setup` unless the loaded one serves it, and forms
  // the group's communicator.
  absl::Status JoinGroup(const GroupSetup& setup, const std::shared_ptr<grpc::Channel>& channel);

  Options options_;
  ModelConfig config_;
  nlohmann::json config_json_;
  bool joined_group_in_last_run_ = false;
  std::optional<GroupSetup> loaded_for_;            // the group the model was loaded for
  std::unique_ptr<ReplaceableCommunicator> group_;  // the model's communicator
  std::unique_ptr<ModelRunner> runner_;             // uses group_
  KeptSequences kept_;  // the sequences of the current group, between steps
};

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_WORKER_WORKER_H_
