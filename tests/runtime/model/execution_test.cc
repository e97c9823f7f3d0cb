// The model on the CPU backend's execution model: a step allocates nothing,
// a step larger than the plan is refused, and adversarial stream timing
// (a slow communication stream under the two-micro-batch overlap) changes no
// result, which it would if the model forgot an event wait.
#include <chrono>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/runtime/model/model_test_util.h"

namespace moeserve::testing {
namespace {

const std::vector<int32_t> kPrompt = {1, 17, 42, 5, 99, 3, 64, 8, 21, 77, 2, 9};

TEST(ModelExecutionTest, StepsAllocateNothingAfterLoading) {
  const std::string dir = MakeTinyForTest("deepseek_v3", "fp8", 11);
  LoadedModel m = LoadForTest(dir);
  ASSERT_NE(m.model, nullptr);
  const int64_t after_load = m.backend->allocations();
  TestSequence a, b;
  FeedChunks(m, {&a, &b}, {{kPrompt.begin(), kPrompt.end()}, {4, 5, 6}});    // prefill
  for (int step = 0; step < 3; ++step) FeedChunks(m, {&a, &b}, {{7}, {8}});  // decode
  EXPECT_EQ(m.backend->allocations(), after_load);
}

TEST(ModelExecutionTest, AStepLargerThanThePlanIsRefused) {
  const std::string dir = MakeTinyForTest("qwen3_moe", "bf16", 12);
  ModelOptions options;
  options.max_batch_tokens = 8;
  LoadedModel m = LoadForTest(dir, options);
  ASSERT_NE(m.model, nullptr);
  ForwardBatch batch;
  batch.tokens.assign(9, 1);
  std::vector<int32_t> table = {0};
  batch.seqs.push_back({0, 9, 9, table});
  batch.logit_rows.push_back(8);
  auto logits = m.model->Forward(batch, *m.cache);
  ASSERT_FALSE(logits.ok());
  EXPECT_EQ(logits.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(logits.status().message().find("planned for"), std::string::npos) << logits.status();
  // The model keeps serving steps within the plan.
  batch.tokens.resize(8);
  batch.seqs[0] = {0, 8, 8, table};
  batch.logit_rows = {7};
  EXPECT_TRUE(m.model->Forward(batch, *m.cache).ok());
}

TEST(ModelExecutionTest, ASlowCommunicationStreamChangesNothingUnderOverlap) {
  for (const char* arch : {"deepseek_v3", "qwen3_moe"}) {
    const std::string dir = MakeTinyForTest(arch, "bf16", 13);
    ModelOptions options;
    options.parallel.micro_batches = 2;
    options.parallel.overlap = true;
    LoadedModel fast = LoadForTest(dir, options);
    CpuBackendOptions slow;
    slow.poison_allocations = true;
    // Compute stream at full speed, communication stream 1 ms per item.
    slow.stream_delays = {std::chrono::microseconds(0), std::chrono::microseconds(1000)};
    LoadedModel delayed = LoadForTest(dir, options, 64, kDefaultKvBlockTokens, KvCacheDtype::kF32,
                                      CreateCpuBackend(slow));
    ASSERT_NE(fast.model, nullptr);
    ASSERT_NE(delayed.model, nullptr);
    TestSequence a1, b1, a2, b2;
    const std::vector<int32_t> other = {4, 5, 6, 7, 8};
    const auto want = FeedChunks(fast, {&a1, &b1}, {kPrompt, other});
    const auto got = FeedChunks(delayed, {&a2, &b2}, {kPrompt, other});
    EXPECT_EQ(got, want) << arch;
    EXPECT_EQ(FeedChunks(delayed, {&a2, &b2}, {{3}, {9}}), FeedChunks(fast, {&a1, &b1}, {{3}, {9}}))
        << arch;
  }
}

}  // namespace
}  // namespace moeserve::testing
