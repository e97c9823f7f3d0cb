// The coordinator scheduler's own time per step: ContinuousBatcher::Schedule
// plus OnStepResult, with N running sequences that all decode (N = 256, 1024,
// 4096), block size 64, prefix caching on. Prompts are 512 tokens; contexts
// grow by one token a step over the timed steps (512 to ~1500 tokens, 8 to
// 24 blocks per table). The worker's answer is prepared once and reused, so
// only the scheduler is timed. Goal: under 100 us per step at 1024.
//
//   build/tools/bench/scheduler_bench [--benchmark_repetitions=5]
#include <cstdint>
#include <memory>
#include <numeric>
#include <vector>

#include "benchmark/benchmark.h"
#include "scheduler/batching/continuous_batcher.h"

namespace moeserve::scheduler {
namespace {

constexpr int64_t kPromptTokens = 512;
constexpr int64_t kTimedSteps = 1000;
constexpr int64_t kBlockSize = 64;

// A batcher whose `n` sequences have read their prompts and all decode.
std::unique_ptr<ContinuousBatcher> DecodingBatcher(int64_t n) {
  ContinuousBatcher::Options o;
  o.max_batch_tokens = 8192;
  o.max_running_seqs = n;
  o.max_waiting = n;
  o.block_size = kBlockSize;
  // Sequences that finish their prompt early decode while the others
  // prefill, with what the decodes leave of the budget: at most twice as
  // many steps as the prompts alone take.
  const int64_t prefill_steps = 2 * (n * kPromptTokens / o.max_batch_tokens + 1);
  const int64_t max_tokens = prefill_steps + kTimedSteps + 64;
  o.num_blocks = n * ((kPromptTokens + max_tokens + kBlockSize - 1) / kBlockSize + 1);
  auto batcher = *ContinuousBatcher::Create(o);
  for (int64_t i = 0; i < n; ++i) {
    Request r;
    r.id = static_cast<uint64_t>(i);
    r.prompt_ids.resize(static_cast<size_t>(kPromptTokens));
    std::iota(r.prompt_ids.begin(), r.prompt_ids.end(), static_cast<int32_t>(i * kPromptTokens));
    r.max_tokens = max_tokens;
    if (!batcher->Add(std::move(r)).ok()) return nullptr;
  }
  while (true) {
    const StepPlan plan = batcher->Schedule();
    StepResult result;
    result.step = plan.step;
    bool all_decode = true;
    for (const ScheduledSequence& s : plan.seqs) {
      all_decode = all_decode && s.token_ids.size() == 1;
      if (s.sample) result.outputs.push_back({s.id, 7, false});
    }
    if (!batcher->OnStepResult(result).ok()) return nullptr;
    if (all_decode && static_cast<int64_t>(plan.seqs.size()) == n) return batcher;
  }
}

// `reuse_plan`: the engine loop keeps one StepPlan across steps
// (Schedule(&plan)) instead of taking a new one from each Schedule().
void RunDecodeSteps(benchmark::State& state, bool reuse_plan) {
  const int64_t n = state.range(0);
  std::unique_ptr<ContinuousBatcher> batcher = DecodingBatcher(n);
  if (batcher == nullptr) {
    state.SkipWithError("setup failed");
    return;
  }
  StepResult result;
  for (int64_t i = 0; i < n; ++i) result.outputs.push_back({static_cast<uint64_t>(i), 7, false});
  StepPlan kept;
  int64_t tokens = 0;
  for (auto _ : state) {
    StepPlan fresh;
    StepPlan& plan = reuse_plan ? kept : fresh;
    batcher->Schedule(&plan);
    result.step = plan.step;
    auto finished = batcher->OnStepResult(result);
    if (!finished.ok() || !finished->empty()) {
      state.SkipWithError(finished.ok() ? "a sequence finished"
                                        : finished.status().ToString().c_str());
      break;
    }
    tokens += plan.num_tokens();
  }
  if (tokens != n * static_cast<int64_t>(state.iterations())) {
    state.SkipWithError("not every sequence decoded every step");
  }
  state.counters["time_per_seq"] = benchmark::Counter(
      static_cast<double>(tokens), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_DecodeStep(benchmark::State& state) { RunDecodeSteps(state, false); }
void BM_DecodeStepReusingPlan(benchmark::State& state) { RunDecodeSteps(state, true); }

BENCHMARK(BM_DecodeStep)
    ->Arg(256)
    ->Arg(1024)
    ->Arg(4096)
    ->Iterations(kTimedSteps)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DecodeStepReusingPlan)
    ->Arg(256)
    ->Arg(1024)
    ->Arg(4096)
    ->Iterations(kTimedSteps)
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace moeserve::scheduler

BENCHMARK_MAIN();
