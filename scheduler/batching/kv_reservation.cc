#include "scheduler/batching/kv_reservation.h"

#include "scheduler/util/invariant.h"

namespace moeserve::scheduler {
namespace {

// False when the free blocks do not suffice; nothing is taken then.
bool ReserveSlots(BlockManager& blocks, Sequence& seq) {
  const absl::Status status = blocks.Append(seq.id, seq.num_scheduled);
  CheckInvariant(status.ok() || absl::IsResourceExhausted(status),
                 "a running sequence holds no KV blocks");
  return status.ok();
}

}  // namespace

void PreemptForRecompute(BlockManager& blocks, Sequence& seq) {
  CheckInvariant(blocks.Free(seq.id).ok(), "preempting a sequence that holds no KV blocks");
  seq.num_computed = 0;
  seq.num_scheduled = 0;
  ++seq.num_preemptions;
}

void ReserveRunningBlocks(BlockManager& blocks, std::vector<Sequence*>& running,
                          std::vector<Sequence*>* preempted) {
  for (size_t i = 0; i < running.size(); ++i) {
    Sequence* seq = running[i];
    if (seq->num_scheduled == 0) continue;
    while (!ReserveSlots(blocks, *seq)) {
      Sequence* victim = running.back();
      running.pop_back();
      PreemptForRecompute(blocks, *victim);
      preempted->push_back(victim);
      if (victim == seq) break;
    }
  }
}

}  // namespace moeserve::scheduler
