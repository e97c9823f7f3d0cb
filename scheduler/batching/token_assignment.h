// Step 1 of scheduling (as TensorRT-LLM's MicroBatchScheduler): which running
// sequences get how many tokens of the step's token budget.
#ifndef MOESERVE_SCHEDULER_BATCHING_TOKEN_ASSIGNMENT_H_
#define MOESERVE_SCHEDULER_BATCHING_TOKEN_ASSIGNMENT_H_

#include <cstdint>
#include <span>

#include "scheduler/batching/sequence.h"

namespace moeserve::scheduler {

// Sets num_scheduled of every sequence in `running` (given in scheduling
// order): first one token to each decoding sequence, then prefill chunks, as
// many tokens as each still has to compute, while the budget lasts. Decodes
// thus never wait behind a long prompt. Returns the tokens assigned, at most
// budget_tokens.
int64_t AssignRunningTokens(std::span<Sequence* const> running, int64_t budget_tokens);

}  // namespace moeserve::scheduler

#endif  // MOESERVE_SCHEDULER_BATCHING_TOKEN_ASSIGNMENT_H_
