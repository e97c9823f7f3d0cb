// A request as the scheduler sees it, and the state of one sequence while it
// waits or runs.
#ifndef MOESERVE_SCHEDULER_BATCHING_SEQUENCE_H_
#define MOESERVE_SCHEDULER_BATCHING_SEQUENCE_H_

#include <cstdint>
#include <vector>

namespace moeserve::scheduler {

// What the API layer hands the batcher once the request is validated and
// tokenized. Arrival order is the order of ContinuousBatcher::Add calls.
struct Request {
  uint64_t id = 0;                  // unique among unfinished requests
  std::vector<int32_t> prompt_ids;  // non-empty
  int64_t max_tokens = 16;          // tokens to generate at most; 0 reads the prompt only
  int priority = 0;                 // higher is scheduled first
  // Tokens the request already generated elsewhere (its worker group was
  // lost): the sequence starts as a preempted one does, its prompt and these
  // to be prefilled again, and counts them against max_tokens.
  std::vector<int32_t> generated_ids;
};

struct Sequence {
  uint64_t id = 0;
  int priority = 0;
  uint64_t arrival = 0;         // 0, 1, 2, ... in order of Add
  std::vector<int32_t> tokens;  // the prompt, then the generated tokens
  int64_t num_prompt_tokens = 0;
  int64_t max_tokens = 0;
  int64_t num_generated = 0;
  int64_t num_computed = 0;               // leading tokens whose KV is in the cache
  int64_t num_cached_prompt_tokens = -1;  // prefix-cache hits when first admitted; -1 before
  int64_t num_preemptions = 0;

  // Bookkeeping of the step in flight; num_scheduled is 0 and the flags are
  // false between steps.
  int64_t num_scheduled = 0;  // tokens fed from num_computed on
  bool sample = false;        // the step samples the sequence's next token
  bool aborted = false;       // aborted while its step was in flight
  bool finished = false;      // ended by the step result being applied
  int64_t output_index = -1;  // its entry in the step result being applied
  uint64_t output_epoch = 0;  // validation pass that matched output_index

  int64_t num_tokens() const { return static_cast<int64_t>(tokens.size()); }
  // Tokens whose KV is still to be computed; 1 for a decoding sequence (its
  // last sampled token), more while the prompt (or, after a preemption, the
  // prompt and the tokens generated so far) is being prefilled.
  int64_t num_uncomputed() const { return num_tokens() - num_computed; }
  bool decoding() const { return num_uncomputed() == 1; }
};

// The scheduling order: higher priority first, then earlier arrival. A total
// order, since arrivals are unique.
inline bool SchedulesBefore(const Sequence* a, const Sequence* b) {
  if (a->priority != b->priority) return a->priority > b->priority;
  return a->arrival < b->arrival;
}

struct SchedulesBeforeLess {
  bool operator()(const Sequence* a, const Sequence* b) const { return SchedulesBefore(a, b); }
};

}  // namespace moeserve::scheduler

#endif  // MOESERVE_SCHEDULER_BATCHING_SEQUENCE_H_
