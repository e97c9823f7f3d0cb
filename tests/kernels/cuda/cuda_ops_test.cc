// The CUDA op set's elementwise, norm, RoPE, cache, routing and sampling ops
// against their CPU twins (kernels/cpu/), on small and DeepSeek-V3-sized
// shapes with random inputs. Every test skips without a GPU.
//
// Tolerances. These ops round where the CPU twin rounds (kernels/cuda/
// cuda_ops.h, "Numerics"), so most comparisons are exact; where a double
// sum is reduced in another order or CUDA's exp/cos/sin differ from glibc's
// in the last bit, results may differ by one float ulp: 1e-6 relative.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "tests/kernels/cuda/cuda_test_util.h"

namespace moeserve::testing {
namespace {

constexpr double kUlpTolerance = 1e-6;

using CudaElementwiseTest = CudaOpsTest;

TEST_F(CudaElementwiseTest, EmbeddingCopiesRowsOfF32AndBf16Tables) {
  const Tensor table = RandomTensor({1000, 96}, 1);
  const std::vector<int32_t> ids = {5, 0, 999, 5, 17};
  DeviceArray<int32_t> dev_ids(ids);
  for (bool bf16 : {false, true}) {
    const Tensor dev_table = bf16 ? DevBf16(table) : Dev(table);
    TwinMatrix out(5, 96, 2, /*extra_cols=*/8, /*offset=*/4);  // a column slice
    gpu_->Embedding(dev_table, dev_ids.cspan(), out.device_view());
    Sync();
    std::vector<float> want;
    for (int32_t id : ids) {
      for (int64_t c = 0; c < 96; ++c) {
        const float v = table.f32()[id * 96 + c];
        want.push_back(bf16 ? Bf16ToF32(F32ToBf16(v)) : v);
      }
    }
    EXPECT_EQ(out.DeviceElements(), want) << (bf16 ? "bf16" : "f32");
  }
}

TEST_F(CudaElementwiseTest, EmbeddingOfAnIdOutsideTheVocabularyAbortsAtSynchronize) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // the child needs its own CUDA context
  const Tensor table = Dev(RandomTensor({10, 8}, 1));
  DeviceArray<int32_t> ids(std::vector<int32_t>{3, 10});
  TwinMatrix out(2, 8, 2);
  EXPECT_DEATH(
      {
        gpu_->Embedding(table, ids.cspan(), out.device_view());
        (void)gpu_->Synchronize();
      },
      "token id outside the vocabulary");
}

TEST_F(CudaElementwiseTest, RmsNormMatchesCpuAtDeepSeekWidthAndInPlace) {
  for (int64_t cols : {int64_t{256}, int64_t{7168}}) {
    TwinMatrix x(37, cols, 3, /*extra_cols=*/64, /*offset=*/32, 4.0f);
    const Tensor w = RandomTensor({cols}, 4);
    TwinMatrix out(37, cols, 5);
    cpu_->RmsNorm(x.host_view(), w, 1e-6f, out.host_view());
    gpu_->RmsNorm(x.device_view(), Dev(w), 1e-6f, out.device_view());
    gpu_->RmsNorm(x.device_view(), Dev(w), 1e-6f, x.device_view());  // in place
    Sync();
    EXPECT_LE(RelativeError(out.DeviceElements(), out.HostElements()), kUlpTolerance) << cols;
    EXPECT_LE(RelativeError(x.DeviceElements(), out.HostElements()), kUlpTolerance) << cols;
  }
}

TEST_F(CudaElementwiseTest, AddIsExact) {
  TwinMatrix x(9, 300, 6, 4, 2), y(9, 300, 7, 0, 0);
  cpu_->Add(x.host_view(), y.host_view());
  gpu_->Add(x.device_view(), y.device_view());
  Sync();
  EXPECT_EQ(y.DeviceElements(), y.HostElements());
}

// DeepSeek-V3's query rope parts (YaRN, interleaved: a 64-wide slice of each
// 192-wide head) and Qwen3's rotate-half over whole 128-wide heads.
TEST_F(CudaElementwiseTest, RopeMatchesCpuForYarnInterleavedAndRotateHalf) {
  const std::vector<int32_t> positions = {0, 1, 7, 4095, 4096, 163839};
  DeviceArray<int32_t> dev_positions(positions);
  const auto tokens = static_cast<int64_t>(positions.size());
  {
    RopeParams p;
    p.rotary_dim = 64;
    p.yarn = true;
    p.factor = 40;
    p.mscale = 1.0;
    p.mscale_all_dim = 1.0;
    const RopeTable table = MakeRopeTable(p, RopeStyle::kInterleaved);
    const int64_t heads = 128;
    TwinMatrix q(tokens * heads, 64, 8, /*extra_cols=*/128, /*offset=*/128, 3.0f);
    cpu_->Rope(q.host_view(), heads, positions, table);
    gpu_->Rope(q.device_view(), heads, dev_positions.cspan(), table);
    Sync();
    EXPECT_LE(RelativeError(q.DeviceElements(), q.HostElements()), kUlpTolerance);
  }
  {
    RopeParams p;
    p.rotary_dim = 128;
    p.theta = 1e6;
    const RopeTable table = MakeRopeTable(p, RopeStyle::kRotateHalf);
    TwinMatrix k(tokens * 4, 128, 9);
    cpu_->Rope(k.host_view(), 4, positions, table);
    gpu_->Rope(k.device_view(), 4, dev_positions.cspan(), table);
    Sync();
    EXPECT_LE(RelativeError(k.DeviceElements(), k.HostElements()), kUlpTolerance);
  }
}

// log-probabilities over DeepSeek-V3's vocabulary: logits in [-10, 10] give
// values down to about -29, where one float ulp is 3.8e-6; the double sums
// are added in another order, so allow two ulps there.
TEST_F(CudaElementwiseTest, LogSoftmaxMatchesCpuOverAFullVocabulary) {
  TwinMatrix x(5, 129280, 10, 0, 0, 10.0f);
  TwinMatrix want(5, 129280, 11);
  cpu_->LogSoftmax(x.host_view(), want.host_view());
  gpu_->LogSoftmax(x.device_view(), x.device_view());  // in place
  Sync();
  const std::vector<float> got = x.DeviceElements(), ref = want.HostElements();
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::fabs(double{got[i]} - ref[i]));
  EXPECT_LE(worst, 8e-6);
}

TEST_F(CudaElementwiseTest, GatherAndScatterAddAreExactWithRepeatedRows) {
  TwinMatrix x(12, 7168, 12);
  const std::vector<int32_t> rows = {3, 3, 0, 11, 7, 3};
  const std::vector<float> weights = {0.5f, -1.25f, 2.0f, 0.1f, 3.0f, 0.7f};
  DeviceArray<int32_t> dev_rows(rows);
  DeviceArray<float> dev_weights(weights);
  TwinMatrix g(6, 7168, 13, 16, 8);
  cpu_->GatherRows(x.host_view(), rows, g.host_view());
  gpu_->GatherRows(x.device_view(), dev_rows.cspan(), g.device_view());
  TwinMatrix y(12, 7168, 14);
  cpu_->ScatterAddRows(g.host_view(), rows, weights, y.host_view());
  gpu_->ScatterAddRows(g.device_view(), dev_rows.cspan(), dev_weights.cspan(), y.device_view());
  Sync();
  EXPECT_EQ(g.DeviceElements(), g.HostElements());
  EXPECT_EQ(y.DeviceElements(), y.HostElements());  // same order of additions, no FMA
}

TEST_F(CudaElementwiseTest, CacheWriteFillsTheSlotsOfEveryPosition) {
  // seq 0: rows 0..2 at positions 4..6 (blocks {5, 2}); row 3 belongs to no
  // sequence; seq 1: row 4 at position 5 (blocks {1, 7}).
  const std::vector<std::vector<int32_t>> tables = {{5, 2}, {1, 7}};
  const std::vector<SeqSlice> seqs = {{0, 3, 7, tables[0]}, {4, 1, 6, tables[1]}};
  TestCache host_cache(8, 4, 40);
  Tensor dev_cache = Dev(Tensor::FromF32({8 * 4, 40}, host_cache.storage));
  const PagedCacheView dev_view{dev_cache.f32(), 8, 4, 40};
  TwinMatrix values(5, 40, 15, 8, 0);
  const SeqTables seq_tables(seqs, 5, 4);
  cpu_->CacheWrite(values.host_view(), seq_tables.host(), host_cache.view);
  gpu_->CacheWrite(values.device_view(), seq_tables.device(), dev_view);
  Sync();
  const std::vector<float> got = Host(dev_cache);
  ASSERT_EQ(got.size(), host_cache.storage.size());
  EXPECT_EQ(std::memcmp(got.data(), host_cache.storage.data(), got.size() * sizeof(float)), 0)
      << "the device cache differs (NaN slots included) from the CPU's";
}

// ---------------------------------------------------------------------------
// Routing: identical expert choices, weights to one ulp.

struct RoutingCase {
  const char* name;
  ScoringFunc scoring;
  int64_t experts, top_k, n_group, topk_group;
  bool bias, norm;
  float scale;
};

class CudaRoutingTest : public CudaOpsTest, public ::testing::WithParamInterface<RoutingCase> {};

TEST_P(CudaRoutingTest, ChoosesTheCpuTwinsExpertsAndWeights) {
  const RoutingCase& c = GetParam();
  const int64_t tokens = 67;
  const std::vector<float> logits = RandomVector(static_cast<size_t>(tokens * c.experts), 16, 3.0f);
  const std::vector<float> bias = RandomVector(static_cast<size_t>(c.experts), 17, 0.5f);
  DeviceArray<float> dev_bias(bias);
  RoutingParams p;
  p.scoring = c.scoring;
  p.num_experts = c.experts;
  p.top_k = c.top_k;
  p.n_group = c.n_group;
  p.topk_group = c.topk_group;
  p.norm_topk_prob = c.norm;
  p.routed_scaling_factor = c.scale;
  const size_t n = static_cast<size_t>(tokens * c.top_k);
  std::vector<int32_t> ids(n);
  std::vector<float> weights(n);
  p.correction_bias = c.bias ? bias.data() : nullptr;
  cpu_->RouteTopK({logits.data(), tokens, c.experts, c.experts}, p, ids, weights);

  const Tensor dev_logits = Dev(Tensor::FromF32({tokens, c.experts}, logits));
  DeviceArray<int32_t> dev_ids(n);
  DeviceArray<float> dev_weights(n);
  p.correction_bias = c.bias ? dev_bias.data() : nullptr;
  gpu_->RouteTopK(dev_logits.mat(), p, dev_ids.span(), dev_weights.span());
  Sync();
  EXPECT_EQ(dev_ids.ToHost(), ids);
  EXPECT_LE(RelativeError(dev_weights.ToHost(), weights), kUlpTolerance);
}

INSTANTIATE_TEST_SUITE_P(
    Configs, CudaRoutingTest,
    ::testing::Values(
        RoutingCase{"deepseek_v3", ScoringFunc::kSigmoid, 256, 8, 8, 4, true, true, 2.5f},
        RoutingCase{"kimi_k2", ScoringFunc::kSigmoid, 384, 8, 1, 1, true, true, 2.827f},
        RoutingCase{"grouped_no_bias", ScoringFunc::kSigmoid, 64, 6, 8, 3, false, false, 1.0f},
        RoutingCase{"qwen3_moe", ScoringFunc::kSoftmax, 128, 8, 1, 1, false, true, 1.0f},
        RoutingCase{"tiny", ScoringFunc::kSoftmax, 16, 4, 4, 2, true, false, 1.0f}),
    [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------
// Sampling: the same tokens for the same (seed, draw_index).

TEST_F(CudaOpsTest, SamplingDrawsTheCpuTwinsTokens) {
  const int64_t vocab = 129280;
  std::vector<SamplingParams> params;
  const auto add = [&](float t, int32_t k, float p, float min_p, uint64_t seed) {
    SamplingParams s;
    s.temperature = t;
    s.top_k = k;
    s.top_p = p;
    s.min_p = min_p;
    s.seed = seed;
    params.push_back(s);
  };
  add(0, 0, 1, 0, 0);  // greedy
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    add(0.7f, 50, 1, 0, seed);          // top-k
    add(1.0f, 0, 0.9f, 0, seed);        // top-p over the whole sorted vocabulary
    add(0.8f, 40, 0.95f, 0.05f, seed);  // all three
    add(1.3f, 0, 1, 0, seed);           // plain temperature (id order)
    add(0.9f, 0, 1, 0.1f, seed);        // min-p only (id order)
  }
  const auto rows = static_cast<int64_t>(params.size());
  std::vector<float> logits = RandomVector(static_cast<size_t>(rows * vocab), 18, 6.0f);
  logits[7] = logits[8] = 50.0f;  // a tie for greedy: the lower id wins
  std::vector<uint64_t> draws(params.size());
  std::iota(draws.begin(), draws.end(), uint64_t{1000});
  std::vector<int32_t> ids(params.size());
  std::vector<float> logprobs(params.size());
  cpu_->Sample({logits.data(), rows, vocab, vocab}, params, draws, ids, logprobs);

  const Tensor dev_logits = Dev(Tensor::FromF32({rows, vocab}, logits));
  DeviceArray<uint64_t> dev_draws(draws);
  DeviceArray<int32_t> dev_ids(params.size());
  DeviceArray<float> dev_logprobs(params.size());
  gpu_->Sample(dev_logits.mat(), params, dev_draws.cspan(), dev_ids.span(), dev_logprobs.span());
  Sync();
  EXPECT_EQ(ids[0], 7);
  EXPECT_EQ(dev_ids.ToHost(), ids);
  // log_softmax of the chosen token: values near -12 (one ulp ~1e-6).
  const std::vector<float> got = dev_logprobs.ToHost();
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], logprobs[i], 4e-6) << "row " << i;
}

}  // namespace
}  // namespace moeserve::testing
