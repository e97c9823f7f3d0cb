#include "runtime/engine/step_executor.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "gtest/gtest.h"
#include "tests/runtime/model/model_test_util.h"

namespace moeserve {
namespace {

const std::string kFixture = std::string(MOESERVE_FIXTURES_DIR) + "/deepseek_v3_small_bf16";

// The chunked and unchunked paths differ only in float summation order; see
// tests/runtime/model/invariance_test.cc.
constexpr double kPathTolerance = 5e-5;

std::vector<int32_t> Blocks(int32_t first, int32_t count) {
  std::vector<int32_t> b;
  for (int32_t i = 0; i < count; ++i) b.push_back(first + i);
  return b;
}

TEST(StepExecutorTest, PromptLogprobsAcrossAChunkBoundaryEqualOneChunk) {
  testing::LoadedModel m = testing::LoadForTest(kFixture);
  ASSERT_NE(m.model, nullptr);
  StepExecutor exec(*m.model, *m.cache, *m.ops);
  const std::vector<int32_t> prompt = {0, 333, 972, 156, 406, 668, 17, 42};

  SequenceWork whole;
  whole.token_ids = prompt;
  whole.context_len = 8;
  whole.block_table = Blocks(0, 1);
  whole.prompt_logprobs = true;
  auto one = exec.Run({&whole, 1});
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_EQ((*one)[0].prompt_logprobs.size(), 7u);  // the last position's next is unknown

  SequenceWork first = whole, second = whole;
  first.token_ids.assign(prompt.begin(), prompt.begin() + 3);
  first.context_len = 3;
  first.block_table = Blocks(1, 1);
  first.following_token = prompt[3];
  second.token_ids.assign(prompt.begin() + 3, prompt.end());
  second.block_table = Blocks(1, 1);
  auto a = exec.Run({&first, 1});
  auto b = exec.Run({&second, 1});
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<float> chunked = (*a)[0].prompt_logprobs;
  chunked.insert(chunked.end(), (*b)[0].prompt_logprobs.begin(), (*b)[0].prompt_logprobs.end());
  ASSERT_EQ(chunked.size(), 7u);
  for (size_t i = 0; i < 7; ++i) {
    EXPECT_NEAR(chunked[i], (*one)[0].prompt_logprobs[i], kPathTolerance) << i;
  }
}

TEST(StepExecutorTest, SamplesWithTopLogprobsMostLikelyFirst) {
  testing::LoadedModel m = testing::LoadForTest(kFixture);
  ASSERT_NE(m.model, nullptr);
  StepExecutor exec(*m.model, *m.cache, *m.ops);
  SequenceWork w;
  w.sequence_id = 77;
  w.token_ids = {0, 5, 9};
  w.context_len = 3;
  w.block_table = Blocks(0, 1);
  w.sample = true;
  w.top_logprobs = 20;
  auto out = exec.Run({&w, 1});
  ASSERT_TRUE(out.ok()) << out.status();
  const SequenceOutput& o = (*out)[0];
  EXPECT_EQ(o.sequence_id, 77u);
  ASSERT_TRUE(o.sampled.has_value());
  ASSERT_EQ(o.top.size(), 20u);
  EXPECT_EQ(o.top[0].id, o.sampled->id) << "greedy picks the most likely token";
  EXPECT_FLOAT_EQ(o.top[0].logprob, o.sampled->logprob);
  double mass = 0;
  for (size_t i = 0; i < o.top.size(); ++i) {
    if (i > 0) {
      EXPECT_LE(o.top[i].logprob, o.top[i - 1].logprob);
    }
    mass += std::exp(o.top[i].logprob);
  }
  EXPECT_LT(mass, 1.0 + 1e-6);
}

TEST(StepExecutorTest, EmptyStepAndNoSampleAreFine) {
  testing::LoadedModel m = testing::LoadForTest(kFixture);
  ASSERT_NE(m.model, nullptr);
  StepExecutor exec(*m.model, *m.cache, *m.ops);
  auto none = exec.Run({});  // a rank with no sequences this step
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
  SequenceWork w;
  w.token_ids = {1, 2};
  w.context_len = 2;
  w.block_table = Blocks(0, 1);
  auto out = exec.Run({&w, 1});
  ASSERT_TRUE(out.ok());
  EXPECT_FALSE((*out)[0].sampled.has_value());
  EXPECT_TRUE((*out)[0].prompt_logprobs.empty());
}

TEST(StepExecutorTest, MalformedWorkIsAnErrorNotACrash) {
  testing::LoadedModel m = testing::LoadForTest(kFixture);
  ASSERT_NE(m.model, nullptr);
  StepExecutor exec(*m.model, *m.cache, *m.ops);
  SequenceWork w;
  w.token_ids = {1, 2};
  w.context_len = 2;
  w.block_table = Blocks(0, 1);
  SequenceWork bad_id = w, bad_blocks = w, bad_top = w, bad_context = w;
  bad_id.token_ids[1] = 1000;
  bad_blocks.block_table = {};
  bad_top.top_logprobs = 21;
  bad_context.context_len = 1;  // fewer than the fed tokens
  for (const SequenceWork* bad : {&bad_id, &bad_blocks, &bad_top, &bad_context}) {
    auto out = exec.Run({bad, 1});
    ASSERT_FALSE(out.ok());
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << out.status();
  }
}

// Check refuses what Run would refuse, one sequence at a time, and changes
// nothing: a good sequence passes and then runs.
TEST(StepExecutorTest, CheckRefusesOneSequenceWithoutTouchingAnything) {
  testing::LoadedModel m = testing::LoadForTest(kFixture);
  ASSERT_NE(m.model, nullptr);
  StepExecutor exec(*m.model, *m.cache, *m.ops);
  SequenceWork good;
  good.sequence_id = 4;
  good.token_ids = {1, 2};
  good.context_len = 2;
  good.block_table = Blocks(0, 1);
  good.sample = true;
  EXPECT_TRUE(exec.Check(good).ok());
  SequenceWork bad_id = good, bad_blocks = good, bad_bias = good, no_history = good;
  bad_id.token_ids[1] = 1000;
  bad_blocks.block_table = {};
  bad_bias.logit_bias = {{-3, 1.0f}};
  no_history.penalties.presence = 0.5f;
  no_history.context_len = 5;  // fed at positions 3 and 4, never seen before
  no_history.block_table = Blocks(1, 1);
  for (const SequenceWork* bad : {&bad_id, &bad_blocks, &bad_bias, &no_history}) {
    const absl::Status s = exec.Check(*bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(std::string(s.message()).find("sequence 4"), std::string::npos) << s;
  }
  EXPECT_EQ(exec.sequences_with_history(), 0u);
  auto out = exec.Run({&good, 1});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE((*out)[0].sampled.has_value());
}

// A logit bias moves the choice, not the reported log-probability: -100 on
// the greedy token picks the runner-up, +100 on the third picks the third,
// each reported with the model's log-probability of that token.
TEST(StepExecutorTest, LogitBiasMovesTheChoiceNotTheLogprob) {
  testing::LoadedModel m = testing::LoadForTest(kFixture);
  ASSERT_NE(m.model, nullptr);
  StepExecutor exec(*m.model, *m.cache, *m.ops);
  SequenceWork w;
  w.sequence_id = 3;
  w.token_ids = {0, 5, 9};
  w.context_len = 3;
  w.block_table = Blocks(0, 1);
  w.sample = true;
  w.top_logprobs = 3;
  auto plain = exec.Run({&w, 1});
  ASSERT_TRUE(plain.ok()) << plain.status();
  const std::vector<TokenLogprob> top = (*plain)[0].top;
  ASSERT_EQ(top.size(), 3u);
  ASSERT_GT(top[0].logprob - top[1].logprob, 0.0f);
  w.top_logprobs = 0;
  w.logit_bias = {{top[0].id, -100.0f}};
  auto banned = exec.Run({&w, 1});
  ASSERT_TRUE(banned.ok()) << banned.status();
  EXPECT_EQ((*banned)[0].sampled->id, top[1].id);
  EXPECT_NEAR((*banned)[0].sampled->logprob, top[1].logprob, 1e-6);
  w.logit_bias = {{top[2].id, 100.0f}};
  auto forced = exec.Run({&w, 1});
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_EQ((*forced)[0].sampled->id, top[2].id);
  EXPECT_NEAR((*forced)[0].sampled->logprob, top[2].logprob, 1e-6);
  w.logit_bias = {{1000, 1.0f}};  // outside the fixture's vocabulary of 1000
  EXPECT_EQ(exec.Run({&w, 1}).status().code(), absl::StatusCode::kInvalidArgument);
}

// ApplyPenalties against its definition, token by token over the whole row.
TEST(StepExecutorTest, PenaltiesFollowTheirDefinition) {
  std::vector<float> row(40);
  for (size_t t = 0; t < row.size(); ++t) row[t] = std::sin(static_cast<float>(t) * 1.7f) * 3.0f;
  const std::unordered_set<int32_t> prompt = {1, 4, 9, 16, 25};
  const std::unordered_map<int32_t, int32_t> generated = {{4, 2}, {7, 1}, {33, 3}};
  const Penalties p{1.5f, 0.25f, 0.5f};
  std::vector<float> got = row;
  ApplyPenalties(p, prompt, generated, got);
  for (int32_t t = 0; t < static_cast<int32_t>(row.size()); ++t) {
    float want = row[static_cast<size_t>(t)];
    const auto g = generated.find(t);
    if (prompt.contains(t) || g != generated.end()) want = want > 0 ? want / 1.5f : want * 1.5f;
    if (g != generated.end()) want -= 0.25f + 0.5f * static_cast<float>(g->second);
    EXPECT_EQ(got[static_cast<size_t>(t)], want) << "token " << t;
  }
}

// Greedy decoding with all three penalties against a reference built from
// the model's raw logits: at every step the chosen token is the argmax of
// the logits penalized by the definition, over the prompt and the tokens
// generated so far, and its reported log-probability is the model's own.
// A sequence that ends is forgotten; one that starts over at position 0
// (re-prefilled) starts its history over.
TEST(StepExecutorTest, GreedyDecodingWithPenaltiesFollowsTheReference) {
  testing::LoadedModel m = testing::LoadForTest(kFixture);
  testing::LoadedModel ref = testing::LoadForTest(kFixture);
  ASSERT_NE(m.model, nullptr);
  ASSERT_NE(ref.model, nullptr);
  StepExecutor exec(*m.model, *m.cache, *m.ops);
  const Penalties penalties{1.3f, 0.4f, 0.6f};
  const std::vector<int32_t> prompt = {0, 333, 972, 156, 406, 668, 17, 42};
  const std::vector<int32_t> table = Blocks(0, 1);
  std::vector<int32_t> fed = prompt;  // everything fed so far
  std::unordered_set<int32_t> prompt_set(prompt.begin(), prompt.end());
  std::unordered_map<int32_t, int32_t> generated;
  SequenceWork w;
  w.sequence_id = 5;
  w.token_ids = prompt;
  w.context_len = static_cast<int64_t>(prompt.size());
  w.block_table = table;
  w.sample = true;
  w.penalties = penalties;
  w.prompt_tokens = static_cast<int64_t>(prompt.size());
  int changed = 0;  // steps where the penalties changed the choice
  for (int step = 0; step < 8; ++step) {
    auto out = exec.Run({&w, 1});
    ASSERT_TRUE(out.ok()) << out.status();
    ASSERT_TRUE((*out)[0].sampled.has_value());
    // The reference: the whole sequence so far in one pass, its last row.
    ForwardBatch batch;
    batch.tokens = fed;
    batch.seqs.push_back({0, static_cast<int64_t>(fed.size()), static_cast<int64_t>(fed.size()),
                          table});
    batch.logit_rows.push_back(static_cast<int64_t>(fed.size()) - 1);
    auto logits = ref.model->Forward(batch, *ref.cache);
    ASSERT_TRUE(logits.ok()) << logits.status();
    std::vector<float> raw(logits->f32(), logits->f32() + logits->numel());
    std::vector<float> penalized = raw;
    for (int32_t t = 0; t < static_cast<int32_t>(raw.size()); ++t) {
      float& l = penalized[static_cast<size_t>(t)];
      const auto g = generated.find(t);
      if (prompt_set.contains(t) || g != generated.end()) l = l > 0 ? l / 1.3f : l * 1.3f;
      if (g != generated.end()) l -= 0.4f + 0.6f * static_cast<float>(g->second);
    }
    const auto argmax = [](const std::vector<float>& v) {
      return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
    };
    const int32_t want = argmax(penalized);
    // Chunked against whole-sequence passes: float summation order only
    // (kPathTolerance); a near tie within it could flip, which these
    // random-weight logits, spread over several units, do not have.
    EXPECT_EQ((*out)[0].sampled->id, want) << "step " << step;
    if (want != argmax(raw)) ++changed;
    double lse = 0;
    const float top = *std::max_element(raw.begin(), raw.end());
    for (float x : raw) lse += std::exp(static_cast<double>(x - top));
    const double logprob = raw[static_cast<size_t>(want)] - top - std::log(lse);
    EXPECT_NEAR((*out)[0].sampled->logprob, logprob, kPathTolerance) << "step " << step;
    // Feed the chosen token back, as the coordinator does.
    const int32_t next = (*out)[0].sampled->id;
    ++generated[next];
    fed.push_back(next);
    w.token_ids = {next};
    w.context_len = static_cast<int64_t>(fed.size());
  }
  EXPECT_GT(changed, 0) << "the penalties never changed a choice: the test proves nothing";
  EXPECT_EQ(exec.sequences_with_history(), 1u);
  const uint64_t ended = 5;
  exec.Release({&ended, 1});
  EXPECT_EQ(exec.sequences_with_history(), 0u);
  // A decode token for a sequence whose history is gone is refused.
  auto orphan = exec.Run({&w, 1});
  ASSERT_FALSE(orphan.ok());
  EXPECT_NE(std::string(orphan.status().message()).find("penalties need the tokens before"),
            std::string::npos)
      << orphan.status();
  // With the earlier tokens sent along (a cached prefix), it is served.
  w.history_tokens.assign(fed.begin(), fed.end() - 1);
  auto resumed = exec.Run({&w, 1});
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(exec.sequences_with_history(), 1u);
  w.history_tokens.pop_back();  // one short of the chunk's first position
  EXPECT_EQ(exec.Run({&w, 1}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moeserve
