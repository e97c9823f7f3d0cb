#include "runtime/worker/step_plan_conversion.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moeserve {
namespace {

namespace pb = ::moeserve::worker::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

pb::SequenceWork FullWork() {
  pb::SequenceWork w;
  w.set_sequence_id(42);
  for (uint32_t t : {0u, 333u, 972u}) w.add_token_ids(t);
  w.set_context_len(3);
  for (uint32_t b : {7u, 2u}) w.add_block_table(b);
  w.set_sample(true);
  pb::Sampling* s = w.mutable_sampling();
  s->set_temperature(0.7f);
  s->set_top_p(0.9f);
  s->set_top_k(40);
  s->set_min_p(0.05f);
  s->set_seed(1234);
  w.set_draw_index(5);
  w.set_logprobs(3);
  w.set_prompt_logprobs(true);
  w.set_following_token(156);
  return w;
}

TEST(StepPlanConversionTest, SequenceWorkCarriesEveryField) {
  auto w = SequenceWorkFromProto(FullWork());
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->sequence_id, 42u);
  EXPECT_THAT(w->token_ids, ElementsAre(0, 333, 972));
  EXPECT_EQ(w->context_len, 3);
  EXPECT_THAT(w->block_table, ElementsAre(7, 2));
  EXPECT_TRUE(w->sample);
  EXPECT_FLOAT_EQ(w->sampling.temperature, 0.7f);
  EXPECT_FLOAT_EQ(w->sampling.top_p, 0.9f);
  EXPECT_EQ(w->sampling.top_k, 40);
  EXPECT_FLOAT_EQ(w->sampling.min_p, 0.05f);
  EXPECT_EQ(w->sampling.seed, 1234u);
  EXPECT_EQ(w->draw_index, 5u);
  EXPECT_EQ(w->top_logprobs, 3);
  EXPECT_TRUE(w->prompt_logprobs);
  ASSERT_TRUE(w->following_token.has_value());
  EXPECT_EQ(*w->following_token, 156);
}

TEST(StepPlanConversionTest, AbsentSamplingIsGreedyAndAbsentFollowingTokenStaysUnset) {
  pb::SequenceWork proto = FullWork();
  proto.clear_sampling();
  proto.clear_following_token();
  auto w = SequenceWorkFromProto(proto);
  ASSERT_TRUE(w.ok()) << w.status();
  const SamplingParams greedy;
  EXPECT_EQ(w->sampling.temperature, greedy.temperature);
  EXPECT_EQ(w->sampling.top_p, greedy.top_p);
  EXPECT_EQ(w->sampling.top_k, greedy.top_k);
  EXPECT_EQ(w->sampling.min_p, greedy.min_p);
  EXPECT_FALSE(w->following_token.has_value());
}

TEST(StepPlanConversionTest, PenaltiesAndThePromptLengthCarryOver) {
  pb::SequenceWork proto = FullWork();
  proto.mutable_sampling()->set_repetition_penalty(0.0f);  // unset
  auto w = SequenceWorkFromProto(proto);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_FALSE(w->penalties.active());
  proto.mutable_sampling()->set_repetition_penalty(1.25f);
  proto.mutable_sampling()->set_presence_penalty(0.5f);
  proto.mutable_sampling()->set_frequency_penalty(-0.25f);
  proto.set_prompt_tokens(7);
  w = SequenceWorkFromProto(proto);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->penalties.repetition, 1.25f);
  EXPECT_EQ(w->penalties.presence, 0.5f);
  EXPECT_EQ(w->penalties.frequency, -0.25f);
  EXPECT_EQ(w->prompt_tokens, 7);
}

TEST(StepPlanConversionTest, BadValuesAreErrorsThatNameThem) {
  struct Case {
    const char* name;
    void (*mutate)(pb::SequenceWork&);
    absl::StatusCode code;
    const char* message;
  };
  const Case cases[] = {
      {"token above int32", [](pb::SequenceWork& w) { w.set_token_ids(1, 0x80000000u); },
       absl::StatusCode::kInvalidArgument, "token 1 is 2147483648"},
      {"block above int32", [](pb::SequenceWork& w) { w.set_block_table(0, 0xffffffffu); },
       absl::StatusCode::kInvalidArgument, "block table entry 0"},
      {"following token above int32", [](pb::SequenceWork& w) { w.set_following_token(~0u); },
       absl::StatusCode::kInvalidArgument, "following token"},
      {"too many logprobs", [](pb::SequenceWork& w) { w.set_logprobs(21); },
       absl::StatusCode::kInvalidArgument, "21 top logprobs"},
      {"negative temperature",
       [](pb::SequenceWork& w) { w.mutable_sampling()->set_temperature(-1); },
       absl::StatusCode::kInvalidArgument, "temperature"},
      {"NaN temperature",
       [](pb::SequenceWork& w) {
         w.mutable_sampling()->set_temperature(std::numeric_limits<float>::quiet_NaN());
       },
       absl::StatusCode::kInvalidArgument, "temperature"},
      {"top_p left at 0", [](pb::SequenceWork& w) { w.mutable_sampling()->set_top_p(0); },
       absl::StatusCode::kInvalidArgument, "top_p must be in (0, 1], got 0"},
      {"negative top_k", [](pb::SequenceWork& w) { w.mutable_sampling()->set_top_k(-2); },
       absl::StatusCode::kInvalidArgument, "top_k"},
      {"min_p above 1", [](pb::SequenceWork& w) { w.mutable_sampling()->set_min_p(1.5f); },
       absl::StatusCode::kInvalidArgument, "min_p"},
      {"negative repetition penalty",
       [](pb::SequenceWork& w) { w.mutable_sampling()->set_repetition_penalty(-1.2f); },
       absl::StatusCode::kInvalidArgument, "repetition_penalty must be finite and > 0, got -1.2"},
      {"presence penalty beyond 2",
       [](pb::SequenceWork& w) { w.mutable_sampling()->set_presence_penalty(2.5f); },
       absl::StatusCode::kInvalidArgument, "presence_penalty must be in [-2, 2]"},
      {"NaN frequency penalty",
       [](pb::SequenceWork& w) {
         w.mutable_sampling()->set_frequency_penalty(std::numeric_limits<float>::quiet_NaN());
       },
       absl::StatusCode::kInvalidArgument, "frequency_penalty"},
  };
  for (const Case& c : cases) {
    pb::SequenceWork proto = FullWork();
    c.mutate(proto);
    auto w = SequenceWorkFromProto(proto);
    ASSERT_FALSE(w.ok()) << c.name;
    EXPECT_EQ(w.status().code(), c.code) << c.name << ": " << w.status();
    EXPECT_THAT(std::string(w.status().message()), HasSubstr(c.message)) << c.name;
  }
}

TEST(StepPlanConversionTest, StepWorkKeepsOrderAndNamesTheBadSequence) {
  pb::StepPlan plan;
  for (uint64_t id : {9u, 3u, 5u}) {
    pb::SequenceWork* w = plan.add_sequences();
    *w = FullWork();
    w->set_sequence_id(id);
  }
  auto work = StepWorkFromProto(plan);
  ASSERT_TRUE(work.ok()) << work.status();
  ASSERT_EQ(work->size(), 3u);
  EXPECT_EQ((*work)[0].sequence_id, 9u);
  EXPECT_EQ((*work)[1].sequence_id, 3u);
  EXPECT_EQ((*work)[2].sequence_id, 5u);

  plan.mutable_sequences(1)->set_logprobs(99);
  work = StepWorkFromProto(plan);
  ASSERT_FALSE(work.ok());
  EXPECT_THAT(std::string(work.status().message()), HasSubstr("sequence 3: 99 top logprobs"));

  EXPECT_TRUE(StepWorkFromProto(pb::StepPlan()).value().empty());
}

// The next step's work of FullWork()'s sequence as the coordinator sends it
// once the worker holds the sequence: the fed token, the blocks appended,
// nothing of its sampling.
pb::SequenceWork ContinuedWork(std::vector<uint32_t> appended, uint32_t table_size) {
  pb::SequenceWork w;
  w.set_sequence_id(42);
  w.add_token_ids(77);
  w.set_context_len(4);
  for (uint32_t b : appended) w.add_block_table(b);
  w.set_continued(true);
  w.set_block_table_length(table_size);
  w.set_sample(true);
  w.set_draw_index(6);
  return w;
}

TEST(KeptSequencesTest, ContinuedWorkTakesTheTableAndSamplingTheWorkerHolds) {
  KeptSequences kept;
  ASSERT_TRUE(kept.Work(FullWork()).ok());
  EXPECT_EQ(kept.size(), 1u);
  auto w = kept.Work(ContinuedWork({9}, 3));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_THAT(w->token_ids, ElementsAre(77));
  EXPECT_EQ(w->context_len, 4);
  EXPECT_THAT(w->block_table, ElementsAre(7, 2, 9));
  EXPECT_FLOAT_EQ(w->sampling.temperature, 0.7f);
  EXPECT_EQ(w->sampling.top_k, 40);
  EXPECT_EQ(w->sampling.seed, 1234u);
  EXPECT_EQ(w->top_logprobs, 3);
  EXPECT_EQ(w->draw_index, 6u);
  // Per-step fields are this step's, not the first work's.
  EXPECT_FALSE(w->prompt_logprobs);
  EXPECT_FALSE(w->following_token.has_value());
  // No block appended: the table stays.
  w = kept.Work(ContinuedWork({}, 3));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_THAT(w->block_table, ElementsAre(7, 2, 9));
}

TEST(KeptSequencesTest, WorkSentInFullReplacesWhatIsHeld) {
  KeptSequences kept;
  ASSERT_TRUE(kept.Work(FullWork()).ok());
  pb::SequenceWork restart = FullWork();  // e.g. after a preemption: new blocks
  restart.clear_block_table();
  restart.add_block_table(11);
  restart.mutable_sampling()->set_top_k(5);
  ASSERT_TRUE(kept.Work(restart).ok());
  auto w = kept.Work(ContinuedWork({12}, 2));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_THAT(w->block_table, ElementsAre(11, 12));
  EXPECT_EQ(w->sampling.top_k, 5);
}

TEST(KeptSequencesTest, ContinuedWorkThatDoesNotAddUpIsRefusedAndForgotten) {
  KeptSequences kept;
  // Nothing held.
  auto w = kept.Work(ContinuedWork({9}, 3));
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(w.status().message(), HasSubstr("does not hold"));
  // A table length other than the plan says: refused, and the sequence is
  // forgotten, so its later work is refused too rather than run on a
  // wrong table.
  ASSERT_TRUE(kept.Work(FullWork()).ok());
  w = kept.Work(ContinuedWork({9}, 4));
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(w.status().message(), HasSubstr("3 blocks (2 held + 1 appended)"));
  EXPECT_THAT(w.status().message(), HasSubstr("says 4"));
  EXPECT_EQ(kept.size(), 0u);
  EXPECT_FALSE(kept.Work(ContinuedWork({}, 2)).ok());
  // Released sequences are forgotten.
  ASSERT_TRUE(kept.Work(FullWork()).ok());
  const std::vector<uint64_t> ended = {42};
  kept.Release(ended);
  EXPECT_EQ(kept.size(), 0u);
  EXPECT_FALSE(kept.Work(ContinuedWork({}, 2)).ok());
  // Continued work needs a KeptSequences.
  EXPECT_FALSE(SequenceWorkFromProto(ContinuedWork({}, 2)).ok());
}

TEST(StepPlanConversionTest, HeaderMustMatchRankWorldAndFollowTheLastStep) {
  pb::StepPlan plan;
  plan.set_step(4);
  plan.set_rank(1);
  plan.set_world_size(2);
  StepPlanExpectation expected{.rank = 1, .world_size = 2, .last_step = std::nullopt};
  EXPECT_TRUE(CheckStepPlanHeader(plan, expected).ok()) << "the first step may be any number";
  expected.last_step = 3;
  EXPECT_TRUE(CheckStepPlanHeader(plan, expected).ok());

  expected.last_step = 4;
  absl::Status repeated = CheckStepPlanHeader(plan, expected);
  EXPECT_EQ(repeated.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(repeated.message()), HasSubstr("step 4 does not follow"));
  expected.last_step = 9;
  EXPECT_FALSE(CheckStepPlanHeader(plan, expected).ok());

  expected.last_step = 3;
  plan.set_rank(0);
  absl::Status wrong_rank = CheckStepPlanHeader(plan, expected);
  EXPECT_EQ(wrong_rank.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(wrong_rank.message()),
              HasSubstr("addressed to rank 0 of 2, but this worker is rank 1 of 2"));
  plan.set_rank(1);
  plan.set_world_size(3);
  EXPECT_FALSE(CheckStepPlanHeader(plan, expected).ok());
}

TEST(StepPlanConversionTest, OutputsCarryTokenLogprobsTopAndPromptLogprobs) {
  SequenceOutput sampled;
  sampled.sequence_id = 11;
  sampled.sampled = TokenLogprob{566, -4.25f};
  sampled.top = {{566, -4.25f}, {12, -4.4f}};
  sampled.prompt_logprobs = {-6.5f, -7.0f};
  SequenceOutput prefill_only;
  prefill_only.sequence_id = 12;
  const std::vector<SequenceOutput> outputs = {sampled, prefill_only};

  const pb::StepResult r = StepResultToProto(8, 1, outputs, 0.25);
  EXPECT_EQ(r.step(), 8u);
  EXPECT_EQ(r.rank(), 1u);
  EXPECT_DOUBLE_EQ(r.step_seconds(), 0.25);
  EXPECT_TRUE(r.error().empty());
  ASSERT_EQ(r.outputs_size(), 2);
  const pb::SequenceOutput& a = r.outputs(0);
  EXPECT_EQ(a.sequence_id(), 11u);
  EXPECT_EQ(a.token_id(), 566u);
  EXPECT_FLOAT_EQ(a.logprob(), -4.25f);
  ASSERT_EQ(a.top_size(), 2);
  EXPECT_EQ(a.top(1).id(), 12u);
  EXPECT_FLOAT_EQ(a.top(1).logprob(), -4.4f);
  EXPECT_THAT(a.prompt_logprobs(), ElementsAre(-6.5f, -7.0f));
  const pb::SequenceOutput& b = r.outputs(1);
  EXPECT_EQ(b.sequence_id(), 12u);
  EXPECT_EQ(b.token_id(), 0u);
  EXPECT_EQ(b.top_size(), 0);
  EXPECT_EQ(b.prompt_logprobs_size(), 0);
}

TEST(StepPlanConversionTest, FailedResultCarriesTheErrorAndNoOutputs) {
  const pb::StepResult r =
      FailedStepResult(3, 0, absl::InvalidArgumentError("token 1 has id 5000"), 0.01);
  EXPECT_EQ(r.step(), 3u);
  EXPECT_EQ(r.rank(), 0u);
  EXPECT_EQ(r.outputs_size(), 0);
  EXPECT_EQ(r.error(), "INVALID_ARGUMENT: token 1 has id 5000");
}

}  // namespace
}  // namespace moeserve
