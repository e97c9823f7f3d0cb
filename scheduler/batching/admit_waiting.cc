#include "scheduler/batching/admit_waiting.h"

#include <algorithm>

#include "scheduler/util/invariant.h"

namespace moeserve::scheduler {
namespace {

// Takes blocks for the cached prefix and a prefill chunk of at most
// `budget_tokens`; false (nothing taken) when the free blocks do not suffice.
bool Start(BlockManager& blocks, Sequence& seq, int64_t budget_tokens) {
  const int64_t cached = blocks.CachedPrefixTokens(seq.tokens);
  const int64_t chunk = std::min(seq.num_tokens() - cached, budget_tokens);
  absl::StatusOr<int64_t> hits = blocks.Allocate(seq.id, seq.tokens, cached + chunk);
  if (!hits.ok()) {
    CheckInvariant(absl::IsResourceExhausted(hits.status()),
                   "a waiting sequence already holds KV blocks");
    return false;
  }
  CheckInvariant(*hits == cached, "the cached prefix changed between lookup and allocation");
  seq.num_computed = cached;
  seq.num_scheduled = chunk;
  if (seq.num_cached_prompt_tokens < 0) seq.num_cached_prompt_tokens = cached;
  return true;
}

}  // namespace

void InsertRunning(std::vector<Sequence*>& running, Sequence* seq) {
  running.insert(std::upper_bound(running.begin(), running.end(), seq, SchedulesBefore), seq);
}

int64_t AdmitWaiting(BlockManager& blocks, WaitingQueue& waiting, std::vector<Sequence*>& running,
                     int64_t budget_tokens, int64_t max_running_seqs) {
  int64_t used = 0;
  while (used < budget_tokens && static_cast<int64_t>(running.size()) < max_running_seqs &&
         !waiting.empty()) {
    Sequence* seq = waiting.front();
    if (!Start(blocks, *seq, budget_tokens - used)) break;
    waiting.PopFront();
    InsertRunning(running, seq);
    used += seq->num_scheduled;
  }
  return used;
}

}  // namespace moeserve::scheduler
