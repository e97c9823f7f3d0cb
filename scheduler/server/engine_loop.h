// The coordinator's engine loop: one thread that owns all scheduling state
// (the continuous batcher and the requests in flight), turns each batcher
// plan into a StepPlan for the worker, and turns each StepResult into
// streamed tokens. gRPC handlers only submit and cancel; they never touch the
// batcher.
#ifndef MOESERVE_SCHEDULER_SERVER_ENGINE_LOOP_H_
#define MOESERVE_SCHEDULER_SERVER_ENGINE_LOOP_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "moeserve/v1/inference.pb.h"
#include "scheduler/admission/generation_request.h"
#include "scheduler/batching/continuous_batcher.h"
#include "scheduler/server/metrics.h"
#include "scheduler/server/worker_link.h"

namespace moeserve {

// Where a request's responses go. Called on the engine thread; must not block.
// After Close, nothing more is sent.
class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  virtual void Send(v1::GenerateResponse response) = 0;
  // Ends the stream: OK after the final message, or an error status.
  virtual void Close(absl::Status status) = 0;
};

class EngineLoop {
 public:
  struct Options {
    scheduler::ContinuousBatcher::Options batcher;  // num_blocks comes from the worker
    absl::Duration step_timeout = absl::Seconds(60);
  };

  EngineLoop(const Options& options, CoordinatorMetrics& metrics);
  ~EngineLoop();  // stops the thread; open requests end with UNAVAILABLE

  // Thread safe. Admits a validated request under `key` (unique per call,
  // chosen by the caller); its responses go to `sink`. RESOURCE_EXHAUSTED
  // when the waiting queue is full, UNAVAILABLE when no worker is ready or
  // the service is draining. On error nothing is sent.
  absl::Status Submit(const std::string& key, GenerationRequest request,
                      std::shared_ptr<ResponseSink> sink);
  // Thread safe. Ends the request with CANCELLED and frees its KV blocks
  // within one step. Unknown keys are ignored.
  void Cancel(const std::string& key);

  // Thread safe. A worker registered; it becomes the serving worker when
  // there is none. Fails if one is already serving.
  absl::Status Attach(std::shared_ptr<WorkerLink> link);
  bool ready() const { return ready_.load(); }
  void Drain();
  bool draining() const { return draining_.load(); }

  struct Snapshot {
    int64_t running = 0;
    int64_t waiting = 0;
    double kv_usage_ratio = 0;
    int64_t kv_blocks_total = 0;
    int64_t kv_blocks_used = 0;
    uint64_t step = 0;
    int64_t in_flight_requests = 0;
    std::optional<worker::v1::Register> worker;
  };
  Snapshot snapshot() const;

 private:
  struct Active;
  struct Command {
    enum Kind { kSubmit, kCancel } kind;
    GenerationRequest request;
    std::shared_ptr<ResponseSink> sink;
    std::string key;
    absl::Time arrival;
  };

  void Run();
  void Apply(Command command);
  absl::Status StartWorker(std::shared_ptr<WorkerLink> link);
  void RunStep(const scheduler::StepPlan& plan);
  worker::v1::StepPlan ToWorkerPlan(const scheduler::StepPlan& plan);
  void HandleOutputs(const scheduler::StepPlan& plan, const worker::v1::StepResult& result);
  void Finish(uint64_t id, const scheduler::FinishedSequence& finished, bool stop_token);
  void FailAll(const absl::Status& status);
  void PublishSnapshot();

  const Options options_;
  CoordinatorMetrics& metrics_;

  mutable std::mutex mu_;  // guards the fields up to `snapshot_`
  std::condition_variable cv_;
  std::deque<Command> commands_;
  std::shared_ptr<WorkerLink> pending_worker_;
  bool stop_ = false;
  int64_t admitted_ = 0;  // submitted and not finished, for the queue bound
  Snapshot snapshot_;

  std::atomic<bool> ready_{false};
  std::atomic<bool> draining_{false};

  // Engine thread only.
  std::shared_ptr<WorkerLink> worker_;
  std::unique_ptr<scheduler::ContinuousBatcher> batcher_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Active>> active_;  // by sequence id
  absl::flat_hash_map<std::string, uint64_t> ids_;                 // key -> sequence id
  uint64_t next_sequence_id_ = 1;
  std::vector<int32_t> eos_ids_;
  int64_t last_preemptions_ = 0;
  uint64_t steps_run_ = 0;
  scheduler::StepPlan plan_;  // the current step's plan, kept to reuse its buffers  // batcher's
                              // cumulative count at the last snapshot

  std::thread thread_;  // last: starts after every field is initialised
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SERVER_ENGINE_LOOP_H_
