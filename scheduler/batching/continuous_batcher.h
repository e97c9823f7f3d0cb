// Iteration-level continuous batching for one pool of KV blocks (one worker
// rank's cache).
//
// Every step, Schedule() plans which tokens to feed: one decode token for
// each running sequence whose tokens are all in the KV cache but the last
// sampled one, then prefill chunks of running and then waiting sequences, by
// priority then arrival, up to max_batch_tokens tokens and max_running_seqs
// sequences (chunked prefill mixed with decode). It allocates the KV blocks
// for what it plans; the block tables travel in the plan. When blocks run out
// it preempts by recompute the running sequence that comes last (lowest
// priority, latest arrival): it loses its blocks and waits again with its
// prompt and the tokens generated so far as its new prompt. Memory pressure
// thus delays requests but never fails them. Full blocks are shared across
// requests with a common prefix (see BlockManager).
//
// NOTES: admission never preempts, and a step that preempted admits nothing
// (the blocks are short; admitting would only thrash). A waiting request whose
// chunk does not fit holds back the ones behind it, so a large request is not
// overtaken for ever. With max_batch_tokens below the number of decoding
// sequences, the last ones in scheduling order wait a step.
//
// The caller (the engine loop) runs the plan, then hands the sampled tokens
// to OnStepResult() before the next Schedule(). No clocks, threads or I/O:
// deadlines and cancellation reach it as Abort(id).
//
// Not thread safe: one engine-loop thread owns it.
#ifndef MOESERVE_SCHEDULER_BATCHING_CONTINUOUS_BATCHER_H_
#define MOESERVE_SCHEDULER_BATCHING_CONTINUOUS_BATCHER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "scheduler/batching/sequence.h"
#include "scheduler/batching/step_plan.h"
#include "scheduler/batching/waiting_queue.h"
#include "scheduler/kv/block_manager.h"

namespace moeserve::scheduler {

class ContinuousBatcher {
 public:
  struct Options {
    int64_t max_batch_tokens = 2048;  // tokens fed per step, decode and prefill together
    int64_t max_running_seqs = 256;   // sequences holding KV blocks at once
    int64_t block_size = kDefaultBlockSizeTokens;  // tokens per KV block
    int64_t num_blocks = 0;                        // KV blocks in the cache
    bool enable_prefix_caching = true;
    int64_t max_waiting = 1024;  // requests Add accepts into the waiting queue
  };

  // For metrics.
  struct Stats {
    int64_t num_running = 0;
    int64_t num_waiting = 0;
    double kv_usage_ratio = 0.0;  // share of KV blocks held by sequences
    int64_t num_free_blocks = 0;
    int64_t prefix_cache_queried_tokens = 0;  // cumulative, as the hits
    int64_t prefix_cache_hit_tokens = 0;
    int64_t num_preemptions = 0;  // cumulative
  };

  // InvalidArgument naming the option unless every limit is positive and the
  // cache has at most INT32_MAX blocks.
  static absl::StatusOr<std::unique_ptr<ContinuousBatcher>> Create(const Options& options);

  ContinuousBatcher(const ContinuousBatcher&) = delete;
  ContinuousBatcher& operator=(const ContinuousBatcher&) = delete;

  // Queues a request. InvalidArgument for an empty prompt, a negative
  // max_tokens, or a prompt + max_tokens whose KV could never fit in the
  // whole cache; AlreadyExists if the id is unfinished; ResourceExhausted when
  // max_waiting requests already wait (preempted sequences do not count
  // against it when they return).
  absl::Status Add(Request request);

  // Plans the next step and allocates its KV blocks. An empty plan (step 0)
  // means there is nothing to run; otherwise the step is in flight until
  // OnStepResult. Calling Schedule while a step is in flight is a bug of the
  // caller and aborts.
  StepPlan Schedule();
  // The same, written into `plan` (any previous content is replaced): an
  // engine loop that keeps one StepPlan across steps reuses its storage and
  // allocates nothing per step once it has held as many sequences.
  void Schedule(StepPlan* plan);

  // Applies the in-flight step: its tokens are now in the KV cache, the
  // sampled ones join their sequences. Returns the sequences that ended (the
  // caller's stop flag, or max_tokens reached); their blocks are free when it
  // returns. On a malformed result (wrong step, unknown or unsampled id,
  // duplicate or missing output) returns InvalidArgument and changes nothing;
  // FailedPrecondition when no step is in flight.
  absl::StatusOr<std::vector<FinishedSequence>> OnStepResult(const StepResult& result);

  // Ends an unfinished request (cancelled, deadline passed); its KV blocks are
  // free when it returns, even while its step is in flight (the result's
  // output for it is then ignored). NotFound for an unknown id.
  absl::StatusOr<FinishedSequence> Abort(uint64_t id);

  Stats stats() const;
  bool step_in_flight() const { return step_in_flight_; }
  // No request waits or runs.
  bool idle() const { return seqs_.empty(); }
  const Options& options() const { return options_; }
  // Read-only view, for tests and the Admin service.
  const BlockManager& block_manager() const { return *blocks_; }

 private:
  ContinuousBatcher(const Options& options, std::unique_ptr<BlockManager> blocks);

  absl::Status CheckRequest(const Request& request) const;
  absl::Status MatchOutputs(const StepResult& result);
  FinishedSequence Finish(Sequence& seq, FinishReason reason);
  void RemoveFinished();

  Options options_;
  std::unique_ptr<BlockManager> blocks_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Sequence>> seqs_;  // unfinished, by id
  WaitingQueue waiting_;
  std::vector<Sequence*> running_;    // hold KV blocks, in scheduling order
  std::vector<Sequence*> in_flight_;  // scheduled in the step in flight, in plan order
  std::vector<std::unique_ptr<Sequence>> aborted_in_flight_;  // kept until their step ends
  uint64_t next_arrival_ = 0;
  uint64_t step_ = 0;  // last step planned
  bool step_in_flight_ = false;
  int64_t num_sampled_in_flight_ = 0;  // outputs the step in flight expects
  uint64_t output_epoch_ = 0;          // one per OnStepResult validation pass
  int64_t num_preemptions_ = 0;
};

}  // namespace moeserve::scheduler

#endif  // MOESERVE_SCHEDULER_BATCHING_CONTINUOUS_BATCHER_H_
