#include "scheduler/batching/continuous_batcher.h"

#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moeserve::scheduler {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

ContinuousBatcher::Options SmallOptions() {
  ContinuousBatcher::Options o;
  o.max_batch_tokens = 64;
  o.max_running_seqs = 8;
  o.block_size = 4;
  o.num_blocks = 64;
  o.max_waiting = 16;
  return o;
}

std::unique_ptr<ContinuousBatcher> Make(const ContinuousBatcher::Options& o) {
  auto b = ContinuousBatcher::Create(o);
  EXPECT_TRUE(b.ok()) << b.status();
  return *std::move(b);
}

std::vector<int32_t> Iota(int64_t n, int32_t first = 0) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), first);
  return v;
}

Request Req(uint64_t id, std::vector<int32_t> prompt, int64_t max_tokens, int priority = 0) {
  Request r;
  r.id = id;
  r.prompt_ids = std::move(prompt);
  r.max_tokens = max_tokens;
  r.priority = priority;
  return r;
}

// The fake model: the token sampled after `context_len` tokens of sequence `id`.
int32_t ModelToken(uint64_t id, int64_t context_len) {
  return static_cast<int32_t>(1000 + (id * 7919 + static_cast<uint64_t>(context_len) * 31) % 1000);
}

// One output per sampled sequence; `stop` lists the ids to finish now.
StepResult Answer(const StepPlan& plan, const std::set<uint64_t>& stop = {}) {
  StepResult r;
  r.step = plan.step;
  for (const ScheduledSequence& s : plan.seqs) {
    if (s.sample) r.outputs.push_back({s.id, ModelToken(s.id, s.context_len), stop.contains(s.id)});
  }
  return r;
}

std::vector<FinishedSequence> Step(ContinuousBatcher& b, const StepPlan& plan,
                                   const std::set<uint64_t>& stop = {}) {
  auto finished = b.OnStepResult(Answer(plan, stop));
  EXPECT_TRUE(finished.ok()) << finished.status();
  return finished.ok() ? *finished : std::vector<FinishedSequence>{};
}

// Runs until idle; returns the plans.
std::vector<StepPlan> RunToEnd(ContinuousBatcher& b, std::map<uint64_t, FinishedSequence>* done,
                               int max_steps = 1000) {
  std::vector<StepPlan> plans;
  while (!b.idle() && max_steps-- > 0) {
    plans.push_back(b.Schedule());
    for (const FinishedSequence& f : Step(b, plans.back())) (*done)[f.id] = f;
  }
  EXPECT_TRUE(b.idle());
  return plans;
}

TEST(ContinuousBatcherTest, CreateNamesTheBadOption) {
  const std::vector<std::pair<const char*, int64_t ContinuousBatcher::Options::*>> fields = {
      {"max_batch_tokens", &ContinuousBatcher::Options::max_batch_tokens},
      {"max_running_seqs", &ContinuousBatcher::Options::max_running_seqs},
      {"block_size", &ContinuousBatcher::Options::block_size},
      {"num_blocks", &ContinuousBatcher::Options::num_blocks},
      {"max_waiting", &ContinuousBatcher::Options::max_waiting}};
  for (const auto& [name, field] : fields) {
    ContinuousBatcher::Options o = SmallOptions();
    o.*field = 0;
    auto b = ContinuousBatcher::Create(o);
    EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(b.status().message(), HasSubstr(name));
  }
  ContinuousBatcher::Options o = SmallOptions();
  o.num_blocks = int64_t{1} << 33;
  EXPECT_EQ(ContinuousBatcher::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ContinuousBatcherTest, AddRejectsBadRequests) {
  ContinuousBatcher::Options o = SmallOptions();
  o.num_blocks = 4;  // 16 tokens
  auto b = Make(o);
  EXPECT_THAT(b->Add(Req(1, {}, 4)).message(), HasSubstr("prompt is empty"));
  EXPECT_EQ(b->Add(Req(1, {1}, -1)).code(), absl::StatusCode::kInvalidArgument);
  // The last generated token is never stored: 10 + 7 - 1 = 16 tokens fit.
  EXPECT_TRUE(b->Add(Req(1, Iota(10), 7)).ok());
  const absl::Status too_long = b->Add(Req(2, Iota(10), 8));
  EXPECT_EQ(too_long.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_long.message(), HasSubstr("prompt (10 tokens) + max tokens (8)"));
  EXPECT_THAT(too_long.message(), HasSubstr("4 blocks of 4 tokens (16 tokens)"));
  EXPECT_EQ(b->Add(Req(3, Iota(17), 0)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(b->Add(Req(4, Iota(1), std::numeric_limits<int64_t>::max())).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(b->Add(Req(1, Iota(2), 1)).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(b->stats().num_waiting, 1);
}

TEST(ContinuousBatcherTest, BoundedQueueGivesResourceExhaustedNamingTheLimit) {
  ContinuousBatcher::Options o = SmallOptions();
  o.max_waiting = 2;
  auto b = Make(o);
  ASSERT_TRUE(b->Add(Req(1, Iota(4), 2)).ok());
  ASSERT_TRUE(b->Add(Req(2, Iota(4), 2)).ok());
  const absl::Status full = b->Add(Req(3, Iota(4), 2));
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.message(), HasSubstr("max_waiting = 2"));
  // Admission drains the queue; the refused request was never queued.
  const StepPlan plan = b->Schedule();
  EXPECT_EQ(plan.seqs.size(), 2u);
  EXPECT_TRUE(b->Add(Req(3, Iota(4), 2)).ok());
  EXPECT_EQ(b->stats().num_waiting, 1);
}

TEST(ContinuousBatcherTest, RunsARequestToItsLengthAndFreesItsBlocks) {
  auto b = Make(SmallOptions());
  ASSERT_TRUE(b->Add(Req(7, Iota(10, 50), 3)).ok());
  StepPlan p1 = b->Schedule();
  EXPECT_EQ(p1.step, 1u);
  EXPECT_TRUE(b->step_in_flight());
  ASSERT_EQ(p1.seqs.size(), 1u);
  EXPECT_EQ(p1.seqs[0].id, 7u);
  EXPECT_EQ(p1.seqs[0].token_ids, Iota(10, 50));
  EXPECT_EQ(p1.seqs[0].context_len, 10);
  EXPECT_EQ(p1.seqs[0].block_table.size(), 3u);
  EXPECT_TRUE(p1.seqs[0].sample);
  EXPECT_THAT(Step(*b, p1), IsEmpty());
  EXPECT_FALSE(b->step_in_flight());

  StepPlan p2 = b->Schedule();
  EXPECT_EQ(p2.step, 2u);
  EXPECT_THAT(p2.seqs[0].token_ids, ElementsAre(ModelToken(7, 10)));
  EXPECT_EQ(p2.seqs[0].context_len, 11);
  EXPECT_THAT(Step(*b, p2), IsEmpty());
  StepPlan p3 = b->Schedule();
  EXPECT_THAT(p3.seqs[0].token_ids, ElementsAre(ModelToken(7, 11)));
  EXPECT_EQ(p3.seqs[0].context_len, 12);
  EXPECT_EQ(p3.seqs[0].block_table.size(), 3u);
  std::vector<FinishedSequence> done = Step(*b, p3);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].id, 7u);
  EXPECT_EQ(done[0].reason, FinishReason::kLength);
  EXPECT_EQ(done[0].num_prompt_tokens, 10);
  EXPECT_EQ(done[0].num_generated_tokens, 3);
  EXPECT_TRUE(b->idle());
  EXPECT_EQ(b->stats().num_free_blocks, 64);
  EXPECT_EQ(b->stats().kv_usage_ratio, 0.0);
  const StepPlan idle = b->Schedule();
  EXPECT_TRUE(idle.empty());
  EXPECT_EQ(idle.step, 0u);
  EXPECT_FALSE(b->step_in_flight());
}

// A request resumed with the tokens it generated before its worker group
// was lost: they are prefilled again after the prompt, the next token is
// drawn at the end of them, and they count against max_tokens.
TEST(ContinuousBatcherTest, AResumedRequestPrefillsWhatItGeneratedAndGoesOnFromThere) {
  auto b = Make(SmallOptions());
  Request r = Req(7, Iota(10, 50), 4);
  r.generated_ids = {ModelToken(7, 10), ModelToken(7, 11)};
  ASSERT_TRUE(b->Add(r).ok());
  StepPlan p1 = b->Schedule();
  ASSERT_EQ(p1.seqs.size(), 1u);
  std::vector<int32_t> context = Iota(10, 50);
  context.insert(context.end(), r.generated_ids.begin(), r.generated_ids.end());
  EXPECT_EQ(p1.seqs[0].token_ids, context);
  EXPECT_EQ(p1.seqs[0].context_len, 12);
  EXPECT_TRUE(p1.seqs[0].sample);
  EXPECT_THAT(Step(*b, p1), IsEmpty());  // the third token
  StepPlan p2 = b->Schedule();
  EXPECT_THAT(p2.seqs[0].token_ids, ElementsAre(ModelToken(7, 12)));
  std::vector<FinishedSequence> done = Step(*b, p2);  // the fourth and last
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].reason, FinishReason::kLength);
  EXPECT_EQ(done[0].num_prompt_tokens, 10);
  EXPECT_EQ(done[0].num_generated_tokens, 4);
  EXPECT_EQ(b->stats().num_free_blocks, 64);

  Request spent = Req(8, Iota(3), 2);
  spent.generated_ids = {1, 2};
  const absl::Status s = b->Add(spent);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("already generated 2 of its 2 tokens"));
}

TEST(ContinuousBatcherTest, AReusedPlanHoldsExactlyTheNewStep) {
  auto b = Make(SmallOptions());
  ASSERT_TRUE(b->Add(Req(1, Iota(9), 1)).ok());
  ASSERT_TRUE(b->Add(Req(2, Iota(6, 40), 3)).ok());
  StepPlan plan;
  plan.preempted = {99};  // stale content is replaced
  b->Schedule(&plan);
  EXPECT_EQ(plan.step, 1u);
  ASSERT_EQ(plan.seqs.size(), 2u);
  EXPECT_THAT(plan.preempted, IsEmpty());
  ASSERT_EQ(Step(*b, plan).size(), 1u);  // request 1 is done
  b->Schedule(&plan);
  EXPECT_EQ(plan.step, 2u);
  ASSERT_EQ(plan.seqs.size(), 1u);
  EXPECT_EQ(plan.seqs[0].id, 2u);
  EXPECT_THAT(plan.seqs[0].token_ids, ElementsAre(ModelToken(2, 6)));
  EXPECT_EQ(plan.seqs[0].block_table, b->block_manager().block_table(2));
  EXPECT_TRUE(plan.seqs[0].sample);
  Step(*b, plan);
  Step(*b, b->Schedule());
  b->Schedule(&plan);
  EXPECT_TRUE(plan.empty());
  EXPECT_EQ(plan.step, 0u);
}

TEST(ContinuousBatcherTest, TheCallersStopFlagEndsTheSequence) {
  auto b = Make(SmallOptions());
  ASSERT_TRUE(b->Add(Req(1, Iota(5), 100)).ok());
  std::vector<FinishedSequence> done = Step(*b, b->Schedule(), {1});
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].reason, FinishReason::kStop);
  EXPECT_EQ(done[0].num_generated_tokens, 1);
  EXPECT_TRUE(b->idle());
  EXPECT_EQ(b->block_manager().num_free_blocks(), 64);
}

TEST(ContinuousBatcherTest, ChunkedPrefillReachesExactlyThePrompt) {
  ContinuousBatcher::Options o = SmallOptions();
  o.max_batch_tokens = 16;
  auto b = Make(o);
  ASSERT_TRUE(b->Add(Req(1, Iota(40, 300), 2)).ok());
  std::vector<int32_t> fed;
  std::vector<int64_t> contexts;
  std::vector<bool> samples;
  for (int i = 0; i < 3; ++i) {
    const StepPlan plan = b->Schedule();
    ASSERT_EQ(plan.seqs.size(), 1u);
    EXPECT_LE(plan.num_tokens(), 16);
    fed.insert(fed.end(), plan.seqs[0].token_ids.begin(), plan.seqs[0].token_ids.end());
    contexts.push_back(plan.seqs[0].context_len);
    samples.push_back(plan.seqs[0].sample);
    EXPECT_EQ(static_cast<int64_t>(plan.seqs[0].block_table.size()),
              (plan.seqs[0].context_len + 3) / 4);
    Step(*b, plan);
  }
  EXPECT_EQ(fed, Iota(40, 300));
  EXPECT_THAT(contexts, ElementsAre(16, 32, 40));
  EXPECT_THAT(samples, ElementsAre(false, false, true));
  const StepPlan decode = b->Schedule();
  EXPECT_THAT(decode.seqs[0].token_ids, ElementsAre(ModelToken(1, 40)));
  EXPECT_EQ(decode.seqs[0].context_len, 41);
}

TEST(ContinuousBatcherTest, DecodesComeFirstAndPrefillTakesTheRestOfTheBudget) {
  ContinuousBatcher::Options o = SmallOptions();
  o.max_batch_tokens = 16;
  auto b = Make(o);
  ASSERT_TRUE(b->Add(Req(1, Iota(4), 10)).ok());
  ASSERT_TRUE(b->Add(Req(2, Iota(4, 40), 10)).ok());
  Step(*b, b->Schedule());
  ASSERT_TRUE(b->Add(Req(3, Iota(100, 500), 10, /*priority=*/9)).ok());
  const StepPlan plan = b->Schedule();
  ASSERT_EQ(plan.seqs.size(), 3u);
  EXPECT_EQ(plan.seqs[0].id, 1u);
  EXPECT_EQ(plan.seqs[0].token_ids.size(), 1u);
  EXPECT_EQ(plan.seqs[1].id, 2u);
  EXPECT_EQ(plan.seqs[1].token_ids.size(), 1u);
  EXPECT_EQ(plan.seqs[2].id, 3u);
  EXPECT_EQ(plan.seqs[2].token_ids, Iota(14, 500));
  EXPECT_EQ(plan.num_tokens(), 16);
  Step(*b, plan);
  // A running prefill continues next to the decodes.
  const StepPlan next = b->Schedule();
  ASSERT_EQ(next.seqs.size(), 3u);
  EXPECT_EQ(next.seqs[2].token_ids, Iota(14, 514));
}

TEST(ContinuousBatcherTest, AdmitsByPriorityThenArrival) {
  ContinuousBatcher::Options o = SmallOptions();
  o.max_running_seqs = 1;
  auto b = Make(o);
  ASSERT_TRUE(b->Add(Req(10, Iota(3), 2, 0)).ok());
  ASSERT_TRUE(b->Add(Req(11, Iota(3), 2, 2)).ok());
  ASSERT_TRUE(b->Add(Req(12, Iota(3), 2, 0)).ok());
  ASSERT_TRUE(b->Add(Req(13, Iota(3), 2, 2)).ok());
  ASSERT_TRUE(b->Add(Req(14, Iota(3), 2, -1)).ok());
  std::map<uint64_t, FinishedSequence> done;
  std::vector<uint64_t> order;
  for (const StepPlan& plan : RunToEnd(*b, &done)) {
    EXPECT_EQ(plan.seqs.size(), 1u);
    if (order.empty() || order.back() != plan.seqs[0].id) order.push_back(plan.seqs[0].id);
  }
  EXPECT_THAT(order, ElementsAre(11, 13, 10, 12, 14));
  EXPECT_EQ(done.size(), 5u);
}

TEST(ContinuousBatcherTest, RespectsMaxRunningSeqs) {
  ContinuousBatcher::Options o = SmallOptions();
  o.max_running_seqs = 2;
  auto b = Make(o);
  for (uint64_t id = 1; id <= 3; ++id) ASSERT_TRUE(b->Add(Req(id, Iota(3), id == 1 ? 1 : 3)).ok());
  StepPlan plan = b->Schedule();
  EXPECT_EQ(plan.seqs.size(), 2u);
  EXPECT_EQ(b->stats().num_running, 2);
  EXPECT_EQ(b->stats().num_waiting, 1);
  ASSERT_EQ(Step(*b, plan).size(), 1u);  // request 1 is done after one token
  plan = b->Schedule();
  ASSERT_EQ(plan.seqs.size(), 2u);
  EXPECT_EQ(plan.seqs[0].id, 2u);
  EXPECT_EQ(plan.seqs[1].id, 3u);
  EXPECT_EQ(plan.seqs[1].token_ids.size(), 3u);
}

TEST(ContinuousBatcherTest, PreemptsTheLatestByRecomputeAndItStillCompletes) {
  ContinuousBatcher::Options o = SmallOptions();
  o.num_blocks = 4;  // 16 tokens
  o.enable_prefix_caching = false;
  auto b = Make(o);
  ASSERT_TRUE(b->Add(Req(1, Iota(4), 8)).ok());      // stores up to 11 tokens
  ASSERT_TRUE(b->Add(Req(2, Iota(4, 20), 8)).ok());  // as many: both do not fit
  std::map<uint64_t, FinishedSequence> done;
  std::vector<StepPlan> plans = RunToEnd(*b, &done);
  std::vector<uint64_t> preempted;
  for (const StepPlan& p : plans)
    preempted.insert(preempted.end(), p.preempted.begin(), p.preempted.end());
  EXPECT_THAT(preempted, ElementsAre(2));
  // Request 2 came back with its prompt and generated tokens as its prompt.
  std::vector<int32_t> expected = Iota(4, 20);
  bool recomputed = false;
  for (size_t i = 0; i < plans.size(); ++i) {
    for (const ScheduledSequence& s : plans[i].seqs) {
      if (s.id != 2 || s.token_ids.size() == 1 || i == 0) continue;
      recomputed = true;
      for (int64_t pos = 4; pos < s.context_len; ++pos) expected.push_back(ModelToken(2, pos));
      EXPECT_EQ(s.token_ids, expected);
      EXPECT_TRUE(s.sample);
    }
  }
  EXPECT_TRUE(recomputed);
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[1].num_generated_tokens, 8);
  EXPECT_EQ(done[1].num_preemptions, 0);
  EXPECT_EQ(done[2].num_generated_tokens, 8);
  EXPECT_EQ(done[2].num_preemptions, 1);
  EXPECT_EQ(b->stats().num_preemptions, 1);
  EXPECT_EQ(b->stats().num_free_blocks, 4);
}

TEST(ContinuousBatcherTest, AbortFreesBlocksWithinTheCall) {
  auto b = Make(SmallOptions());
  ASSERT_TRUE(b->Add(Req(1, Iota(10), 50)).ok());
  ASSERT_TRUE(b->Add(Req(2, Iota(10), 50)).ok());
  Step(*b, b->Schedule());
  ASSERT_TRUE(b->Add(Req(3, Iota(10), 50)).ok());
  EXPECT_EQ(b->stats().num_free_blocks, 64 - 6);
  auto usage = b->Abort(1);
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ(usage->reason, FinishReason::kAborted);
  EXPECT_EQ(usage->num_generated_tokens, 1);
  EXPECT_EQ(b->stats().num_free_blocks, 64 - 3);
  EXPECT_EQ(b->stats().num_running, 1);
  EXPECT_TRUE(b->Abort(3).ok());  // still waiting
  EXPECT_EQ(b->stats().num_waiting, 0);
  EXPECT_EQ(b->Abort(1).status().code(), absl::StatusCode::kNotFound);
  const StepPlan plan = b->Schedule();
  ASSERT_EQ(plan.seqs.size(), 1u);
  EXPECT_EQ(plan.seqs[0].id, 2u);
}

TEST(ContinuousBatcherTest, AbortDuringAStepFreesAtOnceAndItsOutputIsIgnored) {
  for (bool include_output : {true, false}) {
    auto b = Make(SmallOptions());
    ASSERT_TRUE(b->Add(Req(1, Iota(10), 50)).ok());
    ASSERT_TRUE(b->Add(Req(2, Iota(10, 100), 50)).ok());
    const StepPlan plan = b->Schedule();
    ASSERT_TRUE(b->Abort(2).ok());
    EXPECT_EQ(b->stats().num_free_blocks, 64 - 3);
    StepResult result = Answer(plan);
    if (!include_output) std::erase_if(result.outputs, [](auto& o) { return o.id == 2; });
    auto finished = b->OnStepResult(result);
    ASSERT_TRUE(finished.ok()) << finished.status();
    EXPECT_THAT(*finished, IsEmpty());
    EXPECT_EQ(b->stats().num_running, 1);
    EXPECT_TRUE(b->block_manager().CheckConsistency().ok());
    const StepPlan next = b->Schedule();
    ASSERT_EQ(next.seqs.size(), 1u);
    EXPECT_EQ(next.seqs[0].id, 1u);
  }
}

TEST(ContinuousBatcherTest, RejectsMalformedResultsAndChangesNothing) {
  auto b = Make(SmallOptions());
  EXPECT_EQ(b->OnStepResult({}).status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(b->Add(Req(1, Iota(5), 3)).ok());
  ASSERT_TRUE(b->Add(Req(2, Iota(100), 3)).ok());  // a chunk that does not sample
  const StepPlan plan = b->Schedule();
  ASSERT_EQ(plan.seqs.size(), 2u);
  ASSERT_FALSE(plan.seqs[1].sample);
  const StepResult good = Answer(plan);
  StepResult bad = good;
  bad.step = 9;
  EXPECT_THAT(b->OnStepResult(bad).status().message(), HasSubstr("step 1 is in flight"));
  bad = good;
  bad.outputs.push_back({77, 1, false});
  EXPECT_THAT(b->OnStepResult(bad).status().message(), HasSubstr("sequence 77"));
  bad = good;
  bad.outputs.push_back({2, 1, false});
  EXPECT_THAT(b->OnStepResult(bad).status().message(), HasSubstr("does not sample"));
  bad = good;
  bad.outputs.push_back(good.outputs[0]);
  EXPECT_THAT(b->OnStepResult(bad).status().message(), HasSubstr("two outputs"));
  bad = good;
  bad.outputs.clear();
  const auto missing = b->OnStepResult(bad);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("no output for sequence 1"));
  EXPECT_TRUE(b->step_in_flight());
  ASSERT_TRUE(b->OnStepResult(good).ok());
  const StepPlan next = b->Schedule();
  EXPECT_EQ(next.step, 2u);
  EXPECT_THAT(next.seqs[0].token_ids, ElementsAre(ModelToken(1, 5)));
  EXPECT_EQ(next.seqs[1].context_len, 64 + 36);
}

TEST(ContinuousBatcherDeathTest, ScheduleWhileAStepIsInFlightAborts) {
  auto b = Make(SmallOptions());
  ASSERT_TRUE(b->Add(Req(1, Iota(5), 3)).ok());
  b->Schedule();
  EXPECT_DEATH(b->Schedule(), "in flight");
}

TEST(ContinuousBatcherTest, PrefixReuseSkipsCachedPromptTokens) {
  for (bool caching : {true, false}) {
    ContinuousBatcher::Options o = SmallOptions();
    o.block_size = 64;
    o.max_batch_tokens = 512;
    o.enable_prefix_caching = caching;
    auto b = Make(o);
    ASSERT_TRUE(b->Add(Req(1, Iota(200), 1)).ok());
    const StepPlan first = b->Schedule();
    const std::vector<int32_t> first_table = first.seqs[0].block_table;
    ASSERT_EQ(Step(*b, first).size(), 1u);
    std::vector<int32_t> prompt = Iota(130);  // two full blocks in common
    const std::vector<int32_t> tail = Iota(70, 5000);
    prompt.insert(prompt.end(), tail.begin(), tail.end());
    ASSERT_TRUE(b->Add(Req(2, prompt, 1)).ok());
    const StepPlan second = b->Schedule();
    ASSERT_EQ(second.seqs.size(), 1u);
    const ScheduledSequence& s = second.seqs[0];
    const int64_t cached = caching ? 128 : 0;
    EXPECT_EQ(s.context_len, 200);
    EXPECT_EQ(s.token_ids, std::vector<int32_t>(prompt.begin() + cached, prompt.end()));
    if (caching) {
      EXPECT_EQ(s.block_table[0], first_table[0]);
      EXPECT_EQ(s.block_table[1], first_table[1]);
      EXPECT_NE(s.block_table[2], first_table[2]);
    }
    std::vector<FinishedSequence> done = Step(*b, second);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].num_cached_prompt_tokens, cached);
    EXPECT_EQ(b->stats().prefix_cache_hit_tokens, cached);
  }
}

TEST(ContinuousBatcherTest, MaxTokensZeroReadsThePromptOnly) {
  ContinuousBatcher::Options o = SmallOptions();
  o.max_batch_tokens = 8;
  auto b = Make(o);
  ASSERT_TRUE(b->Add(Req(1, Iota(12), 0)).ok());
  StepPlan plan = b->Schedule();
  EXPECT_FALSE(plan.seqs[0].sample);
  EXPECT_THAT(Step(*b, plan), IsEmpty());
  plan = b->Schedule();
  EXPECT_EQ(plan.seqs[0].context_len, 12);
  EXPECT_FALSE(plan.seqs[0].sample);
  std::vector<FinishedSequence> done = Step(*b, plan);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].reason, FinishReason::kLength);
  EXPECT_EQ(done[0].num_generated_tokens, 0);
  EXPECT_TRUE(b->idle());
  EXPECT_EQ(b->stats().num_free_blocks, 64);
}

TEST(ContinuousBatcherTest, StatsReportRunningWaitingAndKvUsage) {
  ContinuousBatcher::Options o = SmallOptions();
  o.max_running_seqs = 2;
  auto b = Make(o);
  for (uint64_t id = 1; id <= 3; ++id) ASSERT_TRUE(b->Add(Req(id, Iota(8), 4)).ok());
  EXPECT_EQ(b->stats().num_waiting, 3);
  EXPECT_EQ(b->stats().num_running, 0);
  Step(*b, b->Schedule());
  const ContinuousBatcher::Stats s = b->stats();
  EXPECT_EQ(s.num_running, 2);
  EXPECT_EQ(s.num_waiting, 1);
  EXPECT_DOUBLE_EQ(s.kv_usage_ratio, 4.0 / 64.0);
  EXPECT_EQ(s.num_free_blocks, 60);
  EXPECT_EQ(s.num_preemptions, 0);
}

}  // namespace
}  // namespace moeserve::scheduler
