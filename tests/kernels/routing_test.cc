// MoE routing (RouteTopK) on hand-checked cases.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"

namespace moeserve {
namespace {

struct Routed {
  std::vector<int32_t> ids;
  std::vector<float> weights;
};

Routed Route(const std::vector<float>& logits, const RoutingParams& p) {
  const int64_t tokens = static_cast<int64_t>(logits.size()) / p.num_experts;
  Routed r{std::vector<int32_t>(tokens * p.top_k), std::vector<float>(tokens * p.top_k)};
  ConstMatView view{logits.data(), tokens, p.num_experts, p.num_experts};
  CreateCpuOps()->RouteTopK(view, p, r.ids, r.weights);
  return r;
}

double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Eight experts in four groups of two (DeepSeek-V3 style, sigmoid + bias).
// Logits [0, 0, ln 3, -ln 3, 0, 0, 0, 0] give scores
// [.5, .5, .75, .25, .5, .5, .5, .5]; the bias makes the selection scores
//   [0.90, 0.00 | 0.62, 0.60 | 0.56, 0.55 | 0.80, 0.05].
// Group scores (sum of the top two): 0.90, 1.22, 1.11, 0.85, so groups 1 and
// 2 survive and experts 2 and 3 win, although experts 0 and 6 have the best
// selection scores overall.
class GroupLimitedRoutingTest : public ::testing::Test {
 protected:
  GroupLimitedRoutingTest() {
    p_.scoring = ScoringFunc::kSigmoid;
    p_.correction_bias = bias_.data();
    p_.num_experts = 8;
    p_.top_k = 2;
    p_.n_group = 4;
    p_.topk_group = 2;
    p_.norm_topk_prob = true;
    p_.routed_scaling_factor = 2.5f;
  }
  const float ln3_ = static_cast<float>(std::log(3.0));
  std::vector<float> logits_ = {0, 0, ln3_, -ln3_, 0, 0, 0, 0};
  std::vector<float> bias_ = {0.4f, -0.5f, -0.13f, 0.35f, 0.06f, 0.05f, 0.3f, -0.45f};
  RoutingParams p_;
};

TEST_F(GroupLimitedRoutingTest, GroupLimitChangesTheChoice) {
  const Routed r = Route(logits_, p_);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{2, 3}));
  // Unbiased scores 0.75 and 0.25, normalized (sum 1) and scaled by 2.5;
  // float32 sigmoid of ln 3: a few ulps.
  EXPECT_NEAR(r.weights[0], 1.875, 1e-6);
  EXPECT_NEAR(r.weights[1], 0.625, 1e-6);
}

TEST_F(GroupLimitedRoutingTest, WithoutGroupLimitTheBestExpertsWin) {
  p_.n_group = 1;
  const Routed r = Route(logits_, p_);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 6}));
  EXPECT_NEAR(r.weights[0], 1.25, 1e-6);  // 0.5 / (0.5 + 0.5) * 2.5, as above
  EXPECT_NEAR(r.weights[1], 1.25, 1e-6);
}

TEST_F(GroupLimitedRoutingTest, WithoutNormalizationWeightsAreScaledScores) {
  p_.norm_topk_prob = false;
  const Routed r = Route(logits_, p_);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{2, 3}));
  EXPECT_NEAR(r.weights[0], 0.75 * 2.5, 1e-6);  // as above
  EXPECT_NEAR(r.weights[1], 0.25 * 2.5, 1e-6);
}

TEST(RoutingTest, GroupScoreIsTheMaximumWithoutBias) {
  // Groups {0,1} {2,3} {4,5} {6,7} with maxima 2.0, 1.8, -3, 1.9: groups 0
  // and 3 survive, so the third expert is 7 (1.7), not 2 (1.8).
  const std::vector<float> logits = {2.0f, -3, 1.8f, -3, -3, -3, 1.9f, 1.7f};
  RoutingParams p;
  p.scoring = ScoringFunc::kSigmoid;
  p.num_experts = 8;
  p.top_k = 3;
  p.n_group = 4;
  p.topk_group = 2;
  const Routed r = Route(logits, p);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 6, 7}));
  // Unnormalized sigmoid scores; float32 sigmoid: a few ulps.
  EXPECT_NEAR(r.weights[0], Sigmoid(2.0), 1e-6);
  EXPECT_NEAR(r.weights[1], Sigmoid(1.9), 1e-6);
  EXPECT_NEAR(r.weights[2], Sigmoid(1.7), 1e-6);
  p.n_group = 1;
  EXPECT_EQ(Route(logits, p).ids, (std::vector<int32_t>{0, 6, 2}));
}

TEST(RoutingTest, SoftmaxTopKQwenStyle) {
  // softmax([1, 2, 3, 0]) = e^x / (e^0 + e^1 + e^2 + e^3); top two: 2 and 1.
  const std::vector<float> logits = {1, 2, 3, 0, /*token 2:*/ 0, 0, 5, 0};
  RoutingParams p;
  p.scoring = ScoringFunc::kSoftmax;
  p.num_experts = 4;
  p.top_k = 2;
  const double z = 1 + std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  Routed r = Route(logits, p);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{2, 1, 2, 0}));
  // Float32 softmax of O(1) logits: relative error of a few ulps.
  EXPECT_NEAR(r.weights[0], std::exp(3.0) / z, 1e-6);
  EXPECT_NEAR(r.weights[1], std::exp(2.0) / z, 1e-6);

  p.norm_topk_prob = true;  // e^3 / (e^3 + e^2) = e / (e + 1)
  r = Route(logits, p);
  EXPECT_NEAR(r.weights[0], std::exp(1.0) / (std::exp(1.0) + 1), 1e-6);
  EXPECT_NEAR(r.weights[1], 1 / (std::exp(1.0) + 1), 1e-6);
  EXPECT_NEAR(r.weights[2] + r.weights[3], 1.0, 1e-6);
  // Second token: expert 2, then a three-way tie among 0, 1, 3 -> expert 0.
  EXPECT_EQ(r.ids[3], 0);
}

TEST(RoutingTest, TiesGoToTheLowerExpertId) {
  const std::vector<float> logits(16, 0.25f);
  RoutingParams p;
  p.scoring = ScoringFunc::kSigmoid;
  p.num_experts = 16;
  p.top_k = 4;
  p.n_group = 4;
  p.topk_group = 2;
  const std::vector<float> bias(16, 0.0f);
  p.correction_bias = bias.data();
  EXPECT_EQ(Route(logits, p).ids, (std::vector<int32_t>{0, 1, 2, 3}));
}

TEST(RoutingTest, BiasSteersSelectionButNotWeights) {
  // Expert 3 has the lowest score but a large bias: it is chosen, weighted
  // by its unbiased score.
  const std::vector<float> logits = {1, 0.5f, 0, -1};
  const std::vector<float> bias = {0, 0, 0, 10};
  RoutingParams p;
  p.scoring = ScoringFunc::kSigmoid;
  p.correction_bias = bias.data();
  p.num_experts = 4;
  p.top_k = 2;
  const Routed r = Route(logits, p);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{3, 0}));
  EXPECT_NEAR(r.weights[0], Sigmoid(-1), 1e-6);  // float32 sigmoid: a few ulps
  EXPECT_NEAR(r.weights[1], Sigmoid(1), 1e-6);
}

}  // namespace
}  // namespace moeserve
