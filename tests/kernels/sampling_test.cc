// Token sampling: greedy, determinism, filters and the drawn distribution.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace moeserve {
namespace {

// Logits whose softmax is exactly proportional to [0.5, 0.3, 0.15, 0.05].
const std::vector<float> kFourWay = {std::log(0.5f), std::log(0.3f), std::log(0.15f),
                                     std::log(0.05f)};

class SamplingTest : public ::testing::Test {
 protected:
  // Samples every row of `logits` ([rows, vocab]) with its own params.
  std::vector<int32_t> Sample(const std::vector<float>& logits, int64_t vocab,
                              const std::vector<SamplingParams>& params,
                              const std::vector<uint64_t>& draws,
                              std::vector<float>* logprobs = nullptr) {
    const int64_t rows = static_cast<int64_t>(params.size());
    std::vector<int32_t> ids(params.size());
    std::vector<float> lp(params.size());
    ops_->Sample(ConstMatView{logits.data(), rows, vocab, vocab}, params, draws, ids, lp);
    if (logprobs != nullptr) *logprobs = lp;
    return ids;
  }
  int32_t SampleOne(const std::vector<float>& logits, const SamplingParams& p, uint64_t draw) {
    return Sample(logits, static_cast<int64_t>(logits.size()), {p}, {draw})[0];
  }
  // Counts of each token over draws 0..n-1 of one request.
  std::vector<int> Histogram(const std::vector<float>& logits, const SamplingParams& p, int n) {
    std::vector<int> counts(logits.size(), 0);
    for (int i = 0; i < n; ++i) ++counts[static_cast<size_t>(SampleOne(logits, p, i))];
    return counts;
  }
  std::unique_ptr<Ops> ops_ = CreateCpuOps();
};

SamplingParams Temp(float t, uint64_t seed = 1) {
  SamplingParams p;
  p.temperature = t;
  p.seed = seed;
  return p;
}

TEST_F(SamplingTest, GreedyTakesTheLowestIdAmongMaxima) {
  const std::vector<float> logits = {0.1f, 3, 3, -1};
  std::vector<float> lp;
  EXPECT_EQ(Sample(logits, 4, {Temp(0)}, {0}, &lp)[0], 1);
  const double lse = std::log(std::exp(0.1) + 2 * std::exp(3.0) + std::exp(-1.0));
  EXPECT_NEAR(lp[0], 3 - lse, 1e-6);  // one float rounding of a value near -0.8
}

TEST_F(SamplingTest, SameSeedAndDrawIndexGiveTheSameToken) {
  const std::vector<float> logits(1000, 0.0f);  // uniform: every token equally likely
  std::vector<int32_t> first;
  for (uint64_t d = 0; d < 50; ++d) first.push_back(SampleOne(logits, Temp(1, 42), d));
  for (uint64_t d = 0; d < 50; ++d) EXPECT_EQ(SampleOne(logits, Temp(1, 42), d), first[d]);
  // Different draw indices and seeds give different tokens (50 uniform draws
  // out of 1000 all equal would have probability 1e-147).
  EXPECT_NE(std::count(first.begin(), first.end(), first[0]), 50);
  int differ = 0;
  for (uint64_t d = 0; d < 50; ++d) differ += SampleOne(logits, Temp(1, 43), d) != first[d];
  EXPECT_GT(differ, 40);  // expected 49.95 differ; 10 collisions has odds ~1e-20
}

TEST_F(SamplingTest, ResultDoesNotDependOnBatchPosition) {
  const int64_t vocab = 64;
  const std::vector<float> mine = testing::RandomVector(vocab, 5, 3.0f);
  SamplingParams p = Temp(0.8f, 7);
  p.top_p = 0.9f;
  std::vector<int32_t> alone;
  for (uint64_t d = 0; d < 20; ++d) alone.push_back(SampleOne(mine, p, d));
  // The same request as row 2 of a batch of 4 with other requests around it.
  for (uint64_t d = 0; d < 20; ++d) {
    std::vector<float> batch = testing::RandomVector(4 * vocab, 6, 3.0f);
    std::copy(mine.begin(), mine.end(), batch.begin() + 2 * vocab);
    const std::vector<SamplingParams> params = {Temp(1, 1), Temp(0), p, Temp(2, 7)};
    EXPECT_EQ(Sample(batch, vocab, params, {d, d, d, d + 1})[2], alone[d]) << d;
  }
}

TEST_F(SamplingTest, TopKOneAndTinyTopPAreGreedy) {
  for (uint32_t seed = 0; seed < 20; ++seed) {
    std::vector<float> logits = testing::RandomVector(100, seed, 2.0f);
    logits[17] = logits[63] = 5.0f;  // a tie for the maximum: the lower id wins
    const int32_t greedy = SampleOne(logits, Temp(0), 0);
    EXPECT_EQ(greedy, 17);
    SamplingParams k1 = Temp(1.5f, seed);
    k1.top_k = 1;
    SamplingParams p0 = Temp(1.5f, seed);
    p0.top_p = 1e-6f;
    for (uint64_t d = 0; d < 5; ++d) {
      EXPECT_EQ(SampleOne(logits, k1, d), greedy);
      EXPECT_EQ(SampleOne(logits, p0, d), greedy);
    }
  }
}

// Per-token counts over n draws agree with the probabilities to within five
// binomial standard deviations (a false failure has odds below 1e-6).
void ExpectFrequencies(const std::vector<int>& counts, const std::vector<double>& probs, int n) {
  for (size_t i = 0; i < probs.size(); ++i) {
    const double sd = std::sqrt(n * probs[i] * (1 - probs[i]));
    EXPECT_NEAR(counts[i], n * probs[i], 5 * sd + 1e-9) << "token " << i;
  }
}

TEST_F(SamplingTest, FrequenciesMatchProbabilities) {
  const int n = 20000;
  ExpectFrequencies(Histogram(kFourWay, Temp(1), n), {0.5, 0.3, 0.15, 0.05}, n);
  // Temperature 2 takes square roots before renormalizing.
  const std::vector<double> s = {std::sqrt(0.5), std::sqrt(0.3), std::sqrt(0.15), std::sqrt(0.05)};
  const double z = s[0] + s[1] + s[2] + s[3];
  ExpectFrequencies(Histogram(kFourWay, Temp(2, 9), n), {s[0] / z, s[1] / z, s[2] / z, s[3] / z},
                    n);
}

TEST_F(SamplingTest, TopKAndTopPRenormalize) {
  const int n = 10000;
  SamplingParams k2 = Temp(1, 3);
  k2.top_k = 2;  // keeps 0.5 and 0.3 -> 0.625, 0.375
  ExpectFrequencies(Histogram(kFourWay, k2, n), {0.625, 0.375, 0, 0}, n);
  SamplingParams p75 = Temp(1, 4);
  p75.top_p = 0.75f;  // 0.5 < 0.75 <= 0.8: keeps tokens 0 and 1
  ExpectFrequencies(Histogram(kFourWay, p75, n), {0.625, 0.375, 0, 0}, n);
  // top_p after top_k works on the renormalized mass: of {0.625, 0.375},
  // top_p 0.6 keeps only token 0 (it would keep two tokens of the original).
  SamplingParams both = Temp(1, 5);
  both.top_k = 2;
  both.top_p = 0.6f;
  ExpectFrequencies(Histogram(kFourWay, both, 500), {1, 0, 0, 0}, 500);
}

TEST_F(SamplingTest, MinPDropsUnlikelyTokens) {
  const int n = 10000;
  SamplingParams p = Temp(1, 6);
  p.min_p = 0.25f;  // threshold 0.125: drops only the 0.05 token
  ExpectFrequencies(Histogram(kFourWay, p, n), {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0}, n);
  p.min_p = 0.7f;  // threshold 0.35: only the most likely token is left
  ExpectFrequencies(Histogram(kFourWay, p, 500), {1, 0, 0, 0}, 500);
}

TEST_F(SamplingTest, LogprobIsOfTheUnmodifiedDistribution) {
  SamplingParams p = Temp(3, 8);
  p.top_k = 2;
  std::vector<float> lp;
  const std::vector<int32_t> ids =
      Sample({kFourWay[0], kFourWay[1], kFourWay[2], kFourWay[3]}, 4, {p}, {0}, &lp);
  const double want[] = {0.5, 0.3, 0.15, 0.05};
  EXPECT_NEAR(lp[0], std::log(want[ids[0]]), 1e-6);  // float logits of O(1): a few ulps
}

}  // namespace
}  // namespace moeserve
