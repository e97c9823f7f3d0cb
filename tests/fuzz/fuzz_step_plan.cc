// Fuzzes the step plans a worker receives from the coordinator: the input is
// a serialized worker.v1.StepPlan, converted as the worker converts it
// (header check, every sequence's work through KeptSequences, so that a
// sequence sent in full and then continued in one plan exercises both
// paths, then the releases). Conversion must answer with a status; work it
// accepts must have the ranges the executor relies on.
#include <cstddef>
#include <cstdint>
#include <span>

#include "moeserve/worker/v1/worker.pb.h"
#include "runtime/worker/step_plan_conversion.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

void RequireExecutable(const moeserve::SequenceWork& w) {
  using moeserve::fuzz::Require;
  for (int32_t id : w.token_ids) Require(id >= 0);
  for (int32_t block : w.block_table) Require(block >= 0);
  Require(w.top_logprobs >= 0 && w.top_logprobs <= 20);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  moeserve::worker::v1::StepPlan plan;
  if (!plan.ParseFromArray(data, static_cast<int>(size))) return 0;
  (void)moeserve::CheckStepPlanHeader(plan, moeserve::StepPlanExpectation{});
  if (auto work = moeserve::StepWorkFromProto(plan); work.ok()) {
    for (const moeserve::SequenceWork& w : *work) RequireExecutable(w);
  }
  moeserve::KeptSequences kept;
  for (const auto& s : plan.sequences()) {
    if (auto w = kept.Work(s); w.ok()) RequireExecutable(*w);
  }
  const auto& released = plan.released_sequences();
  kept.Release(std::span<const uint64_t>(released.data(), static_cast<size_t>(released.size())));
  return 0;
}
