// The model on the CPU backend's execution model: a step allocates nothing,
// a step larger than the plan is refused, and adversarial stream timing
// (a slow communication stream under the two-micro-batch overlap) changes no
// result, which it would if the model forgot an event wait.
#include <chrono>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/runtime/model/model_test_util.h"

namespace moeserve::testing {
namespace {

const std::vector<int32_t> kPrompt = {1, 17, 42, 5, 99, 3, 64, 8, 21, 77, 2, 9};

// The first step sizes the step inputs (sequence and block tables) for the
// cache's block size, once; no step allocates after that.
TEST(ModelExecutionTest, StepsAllocateNothingAfterTheFirst) {
  const std::string dir = MakeTinyForTest("deepseek_v3", "fp8", 11);
  LoadedModel m = LoadForTest(dir);
  ASSERT_NE(m.model, nullptr);
  const int64_t after_load = m.backend->allocations();
  TestSequence a, b;
  FeedChunks(m, {&a, &b}, {{kPrompt.begin(), kPrompt.end()}, {4, 5, 6}});  // prefill
  const int64_t after_first = m.backend->allocations();
  EXPECT_LE(after_first, after_load + 1);
  for (int step = 0; step < 3; ++step) FeedChunks(m, {&a, &b}, {{7}, {8}});  // decode
  EXPECT_EQ(m.backend->allocations(), after_first);
}

// Largest difference between two runs' log-probability rows.
float MaxDiff(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  EXPECT_EQ(a.size(), b.size());
  float worst = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    EXPECT_EQ(a[i].size(), b[i].size());
    for (size_t j = 0; j < a[i].size() && j < b[i].size(); ++j) {
      const float d = std::fabs(a[i][j] - b[i][j]);
      worst = std::isnan(d) ? INFINITY : std::max(worst, d);
    }
  }
  return worst;
}

// Decode steps replayed from a captured graph compute what eager steps do.
// Each step writes new token ids, positions, context lengths and block tables
// into the graph's buffers (the contexts grow past a block boundary, so the
// tables change); a graph that kept anything of the step it was captured
// from, or a padding row that leaked into a real one, would differ. The
// backend poisons its allocations with NaN, so a read of a buffer the step
// did not write shows too. Three sequences run in the bucket of 4 (one
// padding row), then two in the bucket of 2, then one; with one micro-batch
// and with two (without the overlap, which runs eagerly).
TEST(ModelExecutionTest, ReplayedDecodeStepsEqualEagerOnes) {
  const std::vector<std::pair<const char*, const char*>> models = {{"deepseek_v3", "fp8"},
                                                                    {"qwen3_moe", "bf16"}};
  for (const auto& [arch, dtype] : models) {
    for (int micro_batches : {1, 2}) {
      SCOPED_TRACE(std::string(arch) + ", micro-batches " + std::to_string(micro_batches));
      const std::string dir = MakeTinyForTest(arch, dtype, 21);
      ModelOptions eager_options;
      eager_options.parallel.micro_batches = micro_batches;
      ModelOptions graph_options = eager_options;
      graph_options.graphs = true;
      graph_options.graph_batch_sizes = {1, 2, 4};
      LoadedModel eager = LoadForTest(dir, eager_options, 64, 4);
      LoadedModel graphed = LoadForTest(dir, graph_options, 64, 4);
      ASSERT_NE(eager.model, nullptr);
      ASSERT_NE(graphed.model, nullptr);
      TestSequence e[3], g[3];
      const std::vector<std::vector<int32_t>> prompts = {
          kPrompt, {4, 5, 6}, {30, 31, 32, 33, 34, 35, 36}};
      // Prefill is eager in both.
      EXPECT_EQ(FeedChunks(graphed, {&g[0], &g[1], &g[2]}, prompts),
                FeedChunks(eager, {&e[0], &e[1], &e[2]}, prompts));
      EXPECT_EQ(graphed.model->last_forward_stats().graph_batch_size, 0);
      // The same ops over the same rows; only the products' row counts
      // differ (a bucket pads 3 rows to 4), so BLAS may sum in another
      // order: float32 reassociation, ~1e-6 of values of magnitude ~10.
      constexpr float kTolerance = 1e-4f;
      for (int step = 0; step < 6; ++step) {
        const std::vector<std::vector<int32_t>> next = {{10 + step}, {20 + step}, {40 + step}};
        const auto got = FeedChunks(graphed, {&g[0], &g[1], &g[2]}, next);
        const auto want = FeedChunks(eager, {&e[0], &e[1], &e[2]}, next);
        EXPECT_EQ(graphed.model->last_forward_stats().graph_batch_size, 4) << "step " << step;
        EXPECT_LE(MaxDiff(got, want), kTolerance) << "step " << step;
        // The padding row is not dispatched: it counts in no expert's load.
        EXPECT_EQ(graphed.model->last_forward_stats().expert_load,
                  eager.model->last_forward_stats().expert_load)
            << "step " << step;
      }
      for (int step = 0; step < 2; ++step) {
        const auto got = FeedChunks(graphed, {&g[0], &g[2]}, {{50 + step}, {60 + step}});
        const auto want = FeedChunks(eager, {&e[0], &e[2]}, {{50 + step}, {60 + step}});
        EXPECT_EQ(graphed.model->last_forward_stats().graph_batch_size, 2);
        EXPECT_LE(MaxDiff(got, want), kTolerance);
      }
      const auto got = FeedChunks(graphed, {&g[1]}, {{70}});
      const auto want = FeedChunks(eager, {&e[1]}, {{70}});
      EXPECT_EQ(graphed.model->last_forward_stats().graph_batch_size, 1);
      EXPECT_LE(MaxDiff(got, want), kTolerance);
    }
  }
}

// A graph writes the KV cache it was captured with: a step on another cache
// captures again rather than replaying into the first one. After decoding
// one prompt with graphs through a first cache, another prompt through a
// second cache (the first one kept, holding the first prompt's KV in the
// same block ids) gives what an eager model gives; replaying the first
// graphs would attend over the first prompt's KV.
TEST(ModelExecutionTest, AnotherCacheGetsItsOwnGraphs) {
  const std::string dir = MakeTinyForTest("deepseek_v3", "bf16", 23);
  ModelOptions options;
  options.graphs = true;
  LoadedModel m = LoadForTest(dir, options, 64, 4);
  LoadedModel eager = LoadForTest(dir, {}, 64, 4);
  ASSERT_NE(m.model, nullptr);
  ASSERT_NE(eager.model, nullptr);
  auto run = [](LoadedModel& lm, const std::vector<int32_t>& prompt) {
    TestSequence s;
    std::vector<std::vector<std::vector<float>>> rows = {FeedChunks(lm, {&s}, {prompt})};
    for (int step = 0; step < 4; ++step) rows.push_back(FeedChunks(lm, {&s}, {{10 + step}}));
    return rows;
  };
  run(m, kPrompt);
  PagedKvCache::Options o = m.cache->options();
  auto second_cache = PagedKvCache::Create(o, m.backend.get());
  ASSERT_TRUE(second_cache.ok()) << second_cache.status();
  std::unique_ptr<PagedKvCache> first_cache = std::move(m.cache);
  m.cache = *std::move(second_cache);
  m.blocks = std::make_unique<BlockAllocator>(o.num_blocks);
  const std::vector<int32_t> other = {50, 51, 52, 53, 54, 55, 56};
  const auto got = run(m, other);
  const auto want = run(eager, other);
  EXPECT_EQ(m.model->last_forward_stats().graph_batch_size, 1);
  ASSERT_EQ(got.size(), want.size());
  for (size_t step = 0; step < got.size(); ++step) {
    // Bucket 1 holds one real row: the same products as the eager step.
    EXPECT_LE(MaxDiff(got[step], want[step]), 1e-4f) << "step " << step;
  }
}

// With the two-micro-batch overlap the step posts work to the
// communication stream, which a graph does not capture: steps run eagerly.
TEST(ModelExecutionTest, OverlappedStepsRunEagerlyWithGraphsOn) {
  const std::string dir = MakeTinyForTest("qwen3_moe", "bf16", 22);
  ModelOptions options;
  options.parallel.micro_batches = 2;
  options.parallel.overlap = true;
  options.graphs = true;
  LoadedModel m = LoadForTest(dir, options);
  ASSERT_NE(m.model, nullptr);
  TestSequence a, b;
  FeedChunks(m, {&a, &b}, {kPrompt, {4, 5, 6}});
  FeedChunks(m, {&a, &b}, {{7}, {8}});
  EXPECT_EQ(m.model->last_forward_stats().graph_batch_size, 0);
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
