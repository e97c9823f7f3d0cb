// Conversions between the coordinator <-> worker protocol
// (proto/moeserve/worker/v1/worker.proto) and the StepExecutor's plain
// structs. Pure functions: proto stays at the edge of the worker, and every
// value a peer sent is checked here before the executor sees it.
#ifndef MOESERVE_RUNTIME_WORKER_STEP_PLAN_CONVERSION_H_
#define MOESERVE_RUNTIME_WORKER_STEP_PLAN_CONVERSION_H_

#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "moeserve/worker/v1/worker.pb.h"
#include "runtime/engine/step_executor.h"

namespace moeserve {

// Where this worker stands in its group (from Welcome) and the last step it
// answered, against which the next StepPlan is checked.
struct StepPlanExpectation {
  uint32_t rank = 0;
  uint32_t world_size = 1;
  std::optional<uint64_t> last_step;  // none before the first plan
};

// InvalidArgument unless the plan is addressed to this rank and world size
// and its step number is above the last one answered.
absl::Status CheckStepPlanHeader(const worker::v1::StepPlan& plan,
                                 const StepPlanExpectation& expected);

// Sampling as the executor applies it. An absent Sampling message means
// greedy. Present values are taken literally (proto3 leaves top_p 0 when a
// sender forgets it, which is an error here, not "off"). Penalties are not
// implemented by the executor yet: repetition_penalty must be 0 (unset) or
// 1, presence and frequency penalties 0; anything else is Unimplemented,
// rather than tokens silently drawn without them.
absl::StatusOr<SamplingParams> SamplingFromProto(const worker::v1::SequenceWork& work);

// One sequence's work. Checks what the proto's unsigned fields cannot carry
// into the executor's signed ones (ids and blocks above INT32_MAX) and the
// logprobs bound; vocabulary and block-table coverage are left to the
// executor, which knows the model and the cache.
absl::StatusOr<SequenceWork> SequenceWorkFromProto(const worker::v1::SequenceWork& work);

// The repetition, presence and frequency penalties of `work`'s sampling
// (repetition 0 is unset: none). InvalidArgument naming the field when one
// is out of range (repetition finite and > 0, the others in [-2, 2]).
absl::StatusOr<Penalties> PenaltiesFromProto(const worker::v1::SequenceWork& work);

// All of a plan's sequences, in order, none of them continued. Errors name
// the sequence.
absl::StatusOr<std::vector<SequenceWork>> StepWorkFromProto(const worker::v1::StepPlan& plan);

// What a worker keeps of each of its sequences between steps, so that a plan
// carries only what changed (SequenceWork.continued): the block table, and
// the sampling, logprobs and prompt length of the sequence's first work.
// Not thread safe.
class KeptSequences {
 public:
  // The work `s` asks for. Work sent in full is checked as
  // SequenceWorkFromProto does and kept (replacing what was kept of that
  // sequence); continued work is completed from what is kept, its blocks
  // appended. InvalidArgument, keeping nothing of the sequence, when the
  // work is malformed, a continued sequence is not held, or its table's
  // length does not add up.
  absl::StatusOr<SequenceWork> Work(const worker::v1::SequenceWork& s);
  // Forgets these sequences (ended), or all of them (a new group).
  void Release(std::span<const uint64_t> ids);
  void Clear() { kept_.clear(); }
  size_t size() const { return kept_.size(); }

 private:
  // Per-step fields left empty.
  std::unordered_map<uint64_t, SequenceWork> kept_;
};

worker::v1::SequenceOutput SequenceOutputToProto(const SequenceOutput& output);

// A StepResult carrying the outputs of `step` on `rank`.
worker::v1::StepResult StepResultToProto(uint64_t step, uint32_t rank,
                                         std::span<const SequenceOutput> outputs,
                                         double step_seconds);

// A StepResult reporting that `step` failed on `rank` with `error`.
worker::v1::StepResult FailedStepResult(uint64_t step, uint32_t rank, const absl::Status& error,
                                        double step_seconds);

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_WORKER_STEP_PLAN_CONVERSION_H_
