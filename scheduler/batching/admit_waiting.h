// Step 3 of scheduling: admitting waiting sequences into the running set.
#ifndef MOESERVE_SCHEDULER_BATCHING_ADMIT_WAITING_H_
#define MOESERVE_SCHEDULER_BATCHING_ADMIT_WAITING_H_

#include <cstdint>
#include <vector>

#include "scheduler/batching/sequence.h"
#include "scheduler/batching/waiting_queue.h"
#include "scheduler/kv/block_manager.h"

namespace moeserve::scheduler {

// Moves sequences from the front of `waiting` into `running` (kept in
// scheduling order) while tokens of the budget, room under max_running_seqs
// and free KV blocks last. Each takes the blocks of its cached prefix (whose
// tokens it skips) and fresh blocks for a prefill chunk of what remains, as
// long as the budget allows. Stops at the first sequence that does not fit, so
// a large request is never overtaken for ever by smaller ones. Admission never
// preempts. Returns the tokens assigned.
int64_t AdmitWaiting(BlockManager& blocks, WaitingQueue& waiting, std::vector<Sequence*>& running,
                     int64_t budget_tokens, int64_t max_running_seqs);

// Inserts `seq` into `running`, keeping scheduling order.
void InsertRunning(std::vector<Sequence*>& running, Sequence* seq);

}  // namespace moeserve::scheduler

#endif  // MOESERVE_SCHEDULER_BATCHING_ADMIT_WAITING_H_
