#include "scheduler/batching/token_assignment.h"

#include <algorithm>

namespace moeserve::scheduler {

int64_t AssignRunningTokens(std::span<Sequence* const> running, int64_t budget_tokens) {
  int64_t used = 0;
  for (Sequence* seq : running) {
    seq->num_scheduled = 0;
    if (used < budget_tokens && seq->decoding()) {
      seq->num_scheduled = 1;
      ++used;
    }
  }
  for (Sequence* seq : running) {
    if (used == budget_tokens) break;
    if (seq->num_uncomputed() > 1) {
      seq->num_scheduled = std::min(seq->num_uncomputed(), budget_tokens - used);
      used += seq->num_scheduled;
    }
  }
  return used;
}

}  // namespace moeserve::scheduler
