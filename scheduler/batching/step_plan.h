// What the coordinator sends the worker for one step, what comes back, and
// how a sequence ends. Plain data; the proto layer converts it at the edge.
#ifndef MOESERVE_SCHEDULER_BATCHING_STEP_PLAN_H_
#define MOESERVE_SCHEDULER_BATCHING_STEP_PLAN_H_

#include <cstdint>
#include <span>
#include <vector>

#include "scheduler/batching/sequence.h"
#include "scheduler/kv/block_manager.h"

namespace moeserve::scheduler {

struct ScheduledSequence {
  uint64_t id = 0;
  // Fed this step: a prefill chunk or the one decode token. They sit at
  // positions [context_len - token_ids.size(), context_len).
  std::vector<int32_t> token_ids;
  int64_t context_len = 0;           // tokens in the KV cache after this step
  std::vector<int32_t> block_table;  // KV blocks in token order, covering context_len
  bool sample = false;               // sample the next token from the last fed token's logits
};

struct StepPlan {
  uint64_t step = 0;                    // 1, 2, ...; 0 for an empty plan, which is no step
  std::vector<ScheduledSequence> seqs;  // decodes first, then prefill chunks
  std::vector<uint64_t> preempted;      // lost their KV blocks this step; recomputed later
  bool empty() const { return seqs.empty(); }
  int64_t num_tokens() const;
};

struct SequenceOutput {
  uint64_t id = 0;
  int32_t token = 0;      // the sampled token
  bool finished = false;  // the caller's stop decision (EOS, stop token or string)
};

struct StepResult {
  uint64_t step = 0;
  // One per plan sequence with sample set, in any order. Sequences aborted
  // since the plan may be left out or included; theirs are ignored.
  std::vector<SequenceOutput> outputs;
};

enum class FinishReason { kLength, kStop, kAborted };

// Usage of an ended sequence, for the final response and metrics.
struct FinishedSequence {
  uint64_t id = 0;
  FinishReason reason = FinishReason::kLength;
  int64_t num_prompt_tokens = 0;
  int64_t num_generated_tokens = 0;
  int64_t num_cached_prompt_tokens = 0;  // prompt tokens found in the prefix cache
  int64_t num_preemptions = 0;
};

// Writes the plan entries of the running sequences that have tokens scheduled
// (num_scheduled > 0): decodes first, then prefill chunks, each in the order
// of `running`. Sets each one's `sample`, and lists them in `in_flight` in
// plan order. Replaces plan->seqs, reusing the storage of the entries already
// there. Their blocks must already cover num_computed + num_scheduled.
void BuildStepPlan(std::span<Sequence* const> running, const BlockManager& blocks, StepPlan* plan,
                   std::vector<Sequence*>* in_flight);

}  // namespace moeserve::scheduler

#endif  // MOESERVE_SCHEDULER_BATCHING_STEP_PLAN_H_
