// The whole model on the GPU: the unchanged runtime/model forward pass with
// every op run by the CUDA op set (through StagingOps, since the runtime
// keeps activations and the KV cache in host memory today), against
// DeepSeek's reference outputs in ../shared/fixtures (golden.json) and
// against the CPU op set on a tiny Qwen3-MoE checkpoint. Skips without a GPU.
//
// Tolerances. With float32 weights the GPU computes the CPU's float32
// function in another summation order; the CPU engine itself differs from
// the reference by <= 1.05e-5 in log-probability over these 4 layers
// (tests/runtime/model/deepseek_v3_golden_test.cc), so 1e-4 leaves room for
// a second engine's rounding and is 10x tighter than the 1e-3 the project
// asks of float32 engines. With bf16 weights (the bf16 fixture's weights are
// bf16 already, so only the activations' rounding to bf16 before each
// product is new: 2^-9 relative, ~30 products deep) the bound is 5e-2, to be
// tightened once measured (docs/gpu.md).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/kernels/cuda/cuda_test_util.h"
#include "tests/kernels/cuda/staging_ops.h"
#include "tests/runtime/model/model_test_util.h"

namespace moeserve::testing {
namespace {

// Loads `dir` with its ops run on `gpu`, as LoadForTest does with the CPU's.
LoadedModel LoadOnGpu(cuda::CudaOps& gpu, const std::string& dir, StagingOps::WeightMode mode,
                      MlaForm form) {
  LoadedModel m;
  m.ops = std::make_unique<StagingOps>(gpu, mode);
  auto checkpoint = Checkpoint::Open(dir);
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
  if (!checkpoint.ok()) return m;
  m.checkpoint = *std::move(checkpoint);
  ModelOptions options;
  options.mla_form = form;
  auto model = LoadModel(*m.checkpoint, WeightSelection{}, *m.ops, options);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return m;
  m.model = *std::move(model);
  PagedKvCache::Options co;
  co.num_layers = m.model->config().num_hidden_layers;
  co.num_blocks = 64;
  co.block_size = kDefaultKvBlockTokens;
  co.width = m.model->config().kv_cache_width();
  auto cache = PagedKvCache::Create(co);
  EXPECT_TRUE(cache.ok()) << cache.status();
  m.cache = *std::move(cache);
  m.blocks = std::make_unique<BlockAllocator>(co.num_blocks);
  return m;
}

struct GoldenCase {
  const char* fixture;
  MlaForm form;
  StagingOps::WeightMode mode;
  double tolerance;
};

class CudaGoldenTest : public CudaOpsTest, public ::testing::WithParamInterface<GoldenCase> {};

std::string GoldenName(const ::testing::TestParamInfo<GoldenCase>& info) {
  static const char* const kForms[] = {"auto", "prefill", "absorbed"};
  return std::string(info.param.fixture).substr(std::string("deepseek_v3_small_").size()) + "_" +
         kForms[static_cast<int>(info.param.form)] +
         (info.param.mode == StagingOps::WeightMode::kBf16 ? "_bf16_weights" : "_f32_weights");
}

TEST_P(CudaGoldenTest, MatchesDeepSeekReference) {
  const GoldenCase& c = GetParam();
  const std::string dir = std::string(MOESERVE_FIXTURES_DIR) + "/" + c.fixture;
  LoadedModel m = LoadOnGpu(*gpu_, dir, c.mode, c.form);
  ASSERT_NE(m.model, nullptr);
  const int64_t vocab = m.model->config().vocab_size;
  std::ifstream in(dir + "/golden.json");
  ASSERT_TRUE(in.good()) << "cannot read " << dir << "/golden.json";
  const nlohmann::json golden = nlohmann::json::parse(in);
  double max_err = 0;
  int compared = 0;
  for (const auto& gc : golden.at("cases")) {
    const auto prompt = gc.at("prompt_ids").get<std::vector<int32_t>>();
    TestSequence seq;
    const std::vector<float> lp = FeedChunks(m, {&seq}, {prompt})[0];
    ASSERT_EQ(lp.size(), prompt.size() * static_cast<size_t>(vocab));
    const auto& positions = gc.at("positions");
    for (size_t i = 0; i < prompt.size(); ++i) {
      const float* row = lp.data() + i * static_cast<size_t>(vocab);
      const auto ids = positions[i].at("top_ids").get<std::vector<int>>();
      const auto lps = positions[i].at("top_logprobs").get<std::vector<double>>();
      for (size_t k = 0; k < ids.size(); ++k) {
        const double err = std::fabs(row[ids[k]] - lps[k]);
        max_err = std::max(max_err, err);
        EXPECT_LE(err, c.tolerance) << c.fixture << " position " << i << " top-" << k;
        ++compared;
      }
    }
    // Greedy continuation fed the reference's tokens (decode steps: the
    // absorbed form under kAuto).
    std::vector<float> row(lp.end() - vocab, lp.end());
    for (const auto& g : gc.at("greedy")) {
      const int32_t id = g.at("id").get<int32_t>();
      const double err = std::fabs(row[static_cast<size_t>(id)] - g.at("logprob").get<double>());
      max_err = std::max(max_err, err);
      EXPECT_LE(err, c.tolerance) << c.fixture << " greedy token " << id;
      row = FeedChunks(m, {&seq}, {{id}})[0];
    }
  }
  EXPECT_GT(compared, 1000);
  std::printf("%s on the GPU: largest |logprob - reference| = %.3g over %d top-5 entries\n",
              c.fixture, max_err, compared);
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, CudaGoldenTest,
    ::testing::Values(
        GoldenCase{"deepseek_v3_small_bf16", MlaForm::kAuto, StagingOps::WeightMode::kF32, 1e-4},
        GoldenCase{"deepseek_v3_small_fp8", MlaForm::kAuto, StagingOps::WeightMode::kF32, 1e-4},
        GoldenCase{"deepseek_v3_small_bf16", MlaForm::kPrefill, StagingOps::WeightMode::kF32, 1e-4},
        GoldenCase{"deepseek_v3_small_bf16", MlaForm::kAbsorbed, StagingOps::WeightMode::kF32,
                   1e-4},
        GoldenCase{"deepseek_v3_small_bf16", MlaForm::kAuto, StagingOps::WeightMode::kBf16, 5e-2}),
    GoldenName);

// Qwen3-MoE (GQA with q/k norms, softmax routing) has no golden file: the
// GPU against the CPU op set on the same tiny checkpoint, a prompt fed in
// two chunks and two decode steps.
TEST_F(CudaOpsTest, Qwen3MoeMatchesTheCpuOpSet) {
  const std::string dir = MakeTinyForTest("qwen3_moe", "bf16", 7);
  LoadedModel cpu = LoadForTest(dir);
  LoadedModel gpu = LoadOnGpu(*gpu_, dir, StagingOps::WeightMode::kF32, MlaForm::kAuto);
  ASSERT_NE(cpu.model, nullptr);
  ASSERT_NE(gpu.model, nullptr);
  const std::vector<int32_t> tokens = {1, 17, 42, 5, 99, 3, 64, 8, 21, 77, 2};
  const std::vector<float> want = RunChunked(cpu, tokens, 6);
  const std::vector<float> got = RunChunked(gpu, tokens, 6);
  ASSERT_EQ(got.size(), want.size());
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::fabs(double{got[i]} - want[i]));
  EXPECT_LE(worst, 1e-4);
  std::printf("qwen3_moe tiny: largest |gpu - cpu| log-probability = %.3g\n", worst);
}

}  // namespace
}  // namespace moeserve::testing
