// The coordinator's engine loop: one thread that owns all scheduling state
// (the expert-parallel group of worker ranks, one continuous batcher per rank,
// the requests in flight and the expert loads), forms the group when every
// rank has registered, sends every rank its StepPlan for each step in
// lockstep, and turns the StepResults into streamed tokens. gRPC handlers
// only submit, cancel and attach workers; they never touch the batchers.
//
// Losing any rank loses the group: every step needs every rank. The other
// ranks are told to register again, and serving resumes when the group is
// whole. Requests in flight wait for that, up to Options::recovery_timeout,
// and then resume where their streams were: each is prefilled again from its
// prompt and the tokens it already sent, and draws its next tokens with the
// same seeded draws, so a stream sees no error and no repeated or missing
// token. Past the timeout they end with UNAVAILABLE.
#ifndef MOESERVE_SCHEDULER_SERVER_ENGINE_LOOP_H_
#define MOESERVE_SCHEDULER_SERVER_ENGINE_LOOP_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
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
#include "scheduler/placement/expert_load_window.h"
#include "scheduler/placement/expert_placement.h"
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
  // Asked right after each chunk is sent: true when that chunk's token
  // completed a stop string in the text (the text layer's decision). The
  // request then ends in the same step, as a stop token would end it, with
  // FINISH_REASON_STOP_STRING; its KV blocks are freed at once.
  virtual bool stop_requested() const { return false; }
};

class EngineLoop {
 public:
  struct Options {
    scheduler::ContinuousBatcher::Options batcher;  // num_blocks comes from each worker
    absl::Duration step_timeout = absl::Seconds(60);
    // Worker ranks of the expert-parallel group; steps start once all are ready.
    int32_t ep_size = 1;
    // Redundant expert replicas in all (spare slots), when `placement` is unset.
    int32_t redundant_experts = 0;
    // Where every MoE layer's experts live; unset: DefaultPlacement.
    std::optional<scheduler::Placement> placement;
    // Two micro-batches per step, the all-to-all overlapping compute.
    bool overlap = true;
    // The most tokens of one rank per all-to-all exchange (sizes the
    // workers' exchange buffers); 0: the workers' default.
    int64_t max_exchange_tokens = 0;
    // How the ranks of a group of more than one exchange tokens: "gloo"
    // (TCP, CPU or host-staged GPU buffers) or "nccl" (GPU ranks).
    std::string communicator = "gloo";
    double emulated_link_latency_us = 0;
    double emulated_link_gbps = 0;
    absl::Duration communicator_timeout = absl::Seconds(30);
    // How long ranks may take from Welcome to Ready (loading weights, forming
    // the communicator) before the group is formed again.
    absl::Duration group_timeout = absl::Seconds(600);
    // How long requests in flight wait for a lost group to be whole again
    // before they end with UNAVAILABLE; zero ends them at once.
    absl::Duration recovery_timeout = absl::Seconds(120);
    // Steps of expert loads kept for balancedness and placements.
    int64_t expert_load_window_steps = 1000;
    // Runs on the engine thread when the service becomes ready or stops being so.
    std::function<void(bool)> on_ready_changed;
    // Lines for the operator (a group formed or lost, requests waiting for
    // it or ended); on the engine thread. Unset: nothing is logged.
    std::function<void(const std::string&)> log;
  };

  EngineLoop(const Options& options, CoordinatorMetrics& metrics);
  ~EngineLoop();  // stops the thread; open requests end with UNAVAILABLE

  // Thread safe. Admits a validated request under `key` (unique per call,
  // chosen by the caller); its responses go to `sink`. RESOURCE_EXHAUSTED
  // when the waiting queue is full, UNAVAILABLE when the group is not ready
  // or the service is draining. On error nothing is sent.
  absl::Status Submit(const std::string& key, GenerationRequest request,
                      std::shared_ptr<ResponseSink> sink);
  // Thread safe. Ends the request with CANCELLED and frees its KV blocks
  // within one step. Unknown keys are ignored.
  void Cancel(const std::string& key);

  // Thread safe. A worker registered: assigns it its requested rank if that
  // is free, else the lowest free one, and returns the link its handler
  // serves. ALREADY_EXISTS when every rank is taken, FAILED_PRECONDITION
  // when it serves another model than the ranks already registered.
  absl::StatusOr<std::shared_ptr<WorkerLink>> Attach(worker::v1::Register registration);
  bool ready() const { return ready_.load(); }
  void Drain();
  bool draining() const { return draining_.load(); }
  // The generation of the group formed last (its Welcome's communicator_id
  // is "moeserve/group-<n>"); 0 before the first. Thread safe. The rendezvous
  // store accepts only this generation's keys.
  uint64_t group_generation() const { return group_generation_.load(); }

  struct RankSnapshot {
    uint32_t rank = 0;
    std::string worker_id;  // empty while the rank is not registered
    bool ready = false;
    int64_t kv_blocks_total = 0;
    int64_t kv_blocks_used = 0;
    uint32_t kv_block_tokens = 0;
    int64_t running = 0;
  };
  struct Snapshot {
    int64_t running = 0;
    int64_t waiting = 0;
    double kv_usage_ratio = 0;
    int64_t kv_blocks_total = 0;
    int64_t kv_blocks_used = 0;
    uint64_t step = 0;
    int64_t in_flight_requests = 0;
    int32_t world_size = 1;
    // A registration of the group (rank 0 first), with the smallest KV cache
    // of any rank: what admission checks against. Unset until a rank registers.
    std::optional<worker::v1::Register> worker;
    std::vector<RankSnapshot> ranks;
    scheduler::Placement placement;          // once the group has formed
    std::map<int32_t, double> balancedness;  // by MoE layer, over the load window
    scheduler::LoadTrace expert_load;        // the load window's totals
  };
  Snapshot snapshot() const;

 private:
  struct Active;
  struct Rank;
  struct Command {
    enum Kind { kSubmit, kCancel } kind;
    GenerationRequest request;
    std::shared_ptr<ResponseSink> sink;
    std::string key;
    absl::Time arrival;
  };
  enum class GroupState { kWaiting, kForming, kServing };

  void Run();
  void Apply(Command command);
  void FormGroup();
  void CheckForming();
  void LoseGroup(const std::string& reason);
  void RunStep();
  // group_max_tokens: the most tokens any rank runs in the step.
  worker::v1::StepPlan ToWorkerPlan(const scheduler::StepPlan& plan, uint32_t rank,
                                    int64_t group_max_tokens);
  void HandleOutputs(Rank& rank, const worker::v1::StepResult& result);
  void RecordParallelStats(const std::vector<worker::v1::StepResult>& results);
  void Finish(uint64_t id, const scheduler::FinishedSequence& finished, bool stop_token);
  void FailRequests(const absl::Status& status);
  // The group was lost: requests in flight wait for the next one (or end,
  // when recovery is off or they were lost too often).
  void SuspendRequests(const std::string& reason);
  // The group is serving again: the waiting requests go to its ranks.
  void ResumeRequests();
  // Ends the suspended requests once the recovery timeout has passed.
  void ExpireSuspended();
  // Gives an admitted request (new, or resuming with the tokens it already
  // generated) a sequence on the rank with the most headroom; nothing changes
  // when the rank's batcher refuses it.
  absl::Status Place(uint64_t id, Active& a);
  // Ends an admitted request with `status` (an error) and forgets it.
  void End(uint64_t id, const absl::Status& status);
  void SetReady(bool ready);
  bool Busy() const;
  // Sequences the whole group runs at most: each rank runs max_running_seqs.
  int64_t MaxRunning() const {
    return options_.batcher.max_running_seqs * std::max(1, options_.ep_size);
  }
  void PublishSnapshot();
  void Log(const std::string& line) const {
    if (options_.log) options_.log(line);
  }

  const Options options_;
  CoordinatorMetrics& metrics_;

  mutable std::mutex mu_;  // guards the fields up to `snapshot_`
  std::condition_variable cv_;
  std::deque<Command> commands_;
  std::vector<std::shared_ptr<WorkerLink>> members_;  // by rank; null while missing
  bool members_changed_ = false;                      // wakes the loop to form the group
  bool stop_ = false;
  int64_t admitted_ = 0;  // submitted and not finished, for the queue bound
  Snapshot snapshot_;

  std::atomic<bool> ready_{false};
  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> group_generation_{0};  // generation_, for other threads

  // Engine thread only.
  GroupState state_ = GroupState::kWaiting;
  uint64_t generation_ = 0;
  absl::Time forming_deadline_;
  std::vector<std::unique_ptr<Rank>> ranks_;  // the serving group, by rank
  scheduler::Placement placement_;
  std::unique_ptr<scheduler::ExpertLoadWindow> load_window_;
  std::map<int32_t, double> balancedness_;
  std::deque<std::pair<double, double>> overlap_window_;           // (all-to-all, exposed) per step
  absl::flat_hash_map<uint64_t, std::unique_ptr<Active>> active_;  // by sequence id
  absl::flat_hash_map<std::string, uint64_t> ids_;                 // key -> sequence id
  uint64_t next_sequence_id_ = 1;
  // While the group is lost: why, and when the requests waiting for it end.
  std::string lost_reason_;
  std::optional<absl::Time> recovery_deadline_;
  std::deque<Command> held_;  // submissions that arrived while the group was lost
  std::vector<int32_t> eos_ids_;
  uint64_t steps_run_ = 0;

  std::thread thread_;  // last: starts after every field is initialised
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SERVER_ENGINE_LOOP_H_
