#include "scheduler/batching/step_plan.h"

#include "scheduler/util/invariant.h"

namespace moeserve::scheduler {
namespace {

void FillEntry(Sequence* seq, const BlockManager& blocks, ScheduledSequence* entry) {
  const int64_t end = seq->num_computed + seq->num_scheduled;
  const std::vector<int32_t>& table = blocks.block_table(seq->id);
  CheckInvariant(
      end <= seq->num_tokens() && static_cast<int64_t>(table.size()) == blocks.BlocksForTokens(end),
      "scheduled tokens not covered by the sequence's tokens and KV blocks");
  entry->id = seq->id;
  entry->token_ids.assign(seq->tokens.begin() + seq->num_computed, seq->tokens.begin() + end);
  entry->context_len = end;
  entry->block_table.assign(table.begin(), table.end());
  seq->sample = end == seq->num_tokens() && seq->num_generated < seq->max_tokens;
  entry->sample = seq->sample;
}

}  // namespace

int64_t StepPlan::num_tokens() const {
  int64_t n = 0;
  for (const ScheduledSequence& s : seqs) n += static_cast<int64_t>(s.token_ids.size());
  return n;
}

void BuildStepPlan(std::span<Sequence* const> running, const BlockManager& blocks, StepPlan* plan,
                   std::vector<Sequence*>* in_flight) {
  in_flight->clear();
  for (Sequence* seq : running) {
    if (seq->num_scheduled > 0 && seq->decoding()) in_flight->push_back(seq);
  }
  for (Sequence* seq : running) {
    if (seq->num_scheduled > 0 && !seq->decoding()) in_flight->push_back(seq);
  }
  // Entries already there keep their vectors' storage.
  plan->seqs.resize(in_flight->size());
  for (size_t i = 0; i < in_flight->size(); ++i) {
    FillEntry((*in_flight)[i], blocks, &plan->seqs[i]);
  }
}

}  // namespace moeserve::scheduler
