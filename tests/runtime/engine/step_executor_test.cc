#include "runtime/engine/step_executor.h"

#include <cmath>
#include <string>
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

}  // namespace
}  // namespace moeserve
