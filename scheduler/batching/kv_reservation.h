// Step 2 of scheduling (as TensorRT-LLM's CapacityScheduler and its
// allocateKvCache): KV slots for the tokens assigned to running sequences,
// preempting by recompute when the blocks run out.
#ifndef MOESERVE_SCHEDULER_BATCHING_KV_RESERVATION_H_
#define MOESERVE_SCHEDULER_BATCHING_KV_RESERVATION_H_

#include <vector>

#include "scheduler/batching/sequence.h"
#include "scheduler/kv/block_manager.h"

namespace moeserve::scheduler {

// Grows the KV slots of each sequence in `running` (in scheduling order) by
// its num_scheduled tokens. When the free blocks do not suffice, preempts the
// last running sequence (lowest priority, latest arrival; possibly the one
// that needs the blocks) and tries again. Preempted sequences are removed from
// `running` and appended to `preempted`, in that order.
//
// Since every request fits in the whole cache on its own, the first running
// sequence always gets its slots: memory pressure delays, never fails.
void ReserveRunningBlocks(BlockManager& blocks, std::vector<Sequence*>& running,
                          std::vector<Sequence*>* preempted);

// Preemption by recompute: `seq` loses its blocks and its scheduled tokens;
// all its tokens (the prompt and those generated so far) must be computed
// again. Its blocks are freed within the call.
void PreemptForRecompute(BlockManager& blocks, Sequence& seq);

}  // namespace moeserve::scheduler

#endif  // MOESERVE_SCHEDULER_BATCHING_KV_RESERVATION_H_
