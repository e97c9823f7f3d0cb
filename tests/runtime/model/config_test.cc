#include "runtime/model/config.h"

#include <cmath>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moeserve {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

json FixtureConfig() {
  std::ifstream in(std::string(MOESERVE_FIXTURES_DIR) + "/deepseek_v3_small_bf16/config.json");
  return json::parse(in);
}

json Qwen3Config() {
  return json::parse(R"({
    "model_type": "qwen3_moe", "vocab_size": 1024, "hidden_size": 256,
    "num_hidden_layers": 4, "intermediate_size": 384, "num_attention_heads": 8,
    "num_key_value_heads": 2, "head_dim": 48, "max_position_embeddings": 40960,
    "num_experts": 16, "num_experts_per_tok": 4, "moe_intermediate_size": 96,
    "norm_topk_prob": true, "decoder_sparse_step": 2, "mlp_only_layers": [3],
    "rope_theta": 1000000, "rope_scaling": null, "rms_norm_eps": 1e-6,
    "tie_word_embeddings": true, "eos_token_id": [1, 2]})");
}

TEST(ConfigTest, ParsesDeepseekV3) {
  auto c = ParseModelConfig(FixtureConfig());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Architecture::kDeepseekV3);
  EXPECT_EQ(c->q_lora_rank, 192);
  EXPECT_EQ(c->kv_cache_width(), 128 + 32);  // latent + rope key, not per-head K/V
  EXPECT_EQ(c->scoring_func, ScoringFunc::kSigmoid);
  EXPECT_EQ(c->n_group, 4);
  EXPECT_EQ(c->topk_group, 2);
  EXPECT_FLOAT_EQ(c->routed_scaling_factor, 2.5f);
  EXPECT_TRUE(c->rope.yarn);
  EXPECT_DOUBLE_EQ(c->rope.factor, 40.0);
  EXPECT_FALSE(c->IsMoeLayer(0));
  EXPECT_TRUE(c->IsMoeLayer(1));
  // softmax scale = (qk_head_dim)^-0.5 * (0.1 * mscale_all_dim * ln(40) + 1)^2.
  const double m = 0.1 * std::log(40.0) + 1.0;
  EXPECT_NEAR(c->softmax_scale(), m * m / std::sqrt(96.0), 1e-6);
}

TEST(ConfigTest, KimiK2IsTheDeepseekArchitecture) {
  json j = FixtureConfig();
  j["model_type"] = "kimi_k2";
  j["n_group"] = 1;
  j["topk_group"] = 1;
  auto c = ParseModelConfig(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Architecture::kDeepseekV3);
}

TEST(ConfigTest, NullQLoraRankMeansOneQueryProjection) {
  json j = FixtureConfig();
  j["q_lora_rank"] = nullptr;
  auto c = ParseModelConfig(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->q_lora_rank, 0);
}

TEST(ConfigTest, ParsesQwen3Moe) {
  auto c = ParseModelConfig(Qwen3Config());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Architecture::kQwen3Moe);
  EXPECT_EQ(c->kv_cache_width(), 2 * 2 * 48);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_FALSE(c->rope.yarn);
  EXPECT_EQ(c->rope.rotary_dim, 48);
  // decoder_sparse_step 2: layers 1 and 3 would be sparse; 3 is mlp-only.
  EXPECT_FALSE(c->IsMoeLayer(0));
  EXPECT_TRUE(c->IsMoeLayer(1));
  EXPECT_FALSE(c->IsMoeLayer(2));
  EXPECT_FALSE(c->IsMoeLayer(3));
  EXPECT_TRUE(c->IsEos(2));
  EXPECT_NEAR(c->softmax_scale(), 1.0 / std::sqrt(48.0), 1e-7);
}

struct BadCase {
  std::string name;
  std::function<void(json&)> edit;
  std::string message;
};

class BadConfigTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadConfigTest, IsRejectedWithAClearMessage) {
  json j = GetParam().name.rfind("qwen", 0) == 0 ? Qwen3Config() : FixtureConfig();
  GetParam().edit(j);
  auto c = ParseModelConfig(j);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadConfigTest,
    ::testing::Values(
        BadCase{"unknown_type", [](json& j) { j["model_type"] = "llama"; },
                "model_type \"llama\" is not supported"},
        BadCase{"missing_hidden", [](json& j) { j.erase("hidden_size"); },
                "\"hidden_size\" is missing"},
        BadCase{"string_layers", [](json& j) { j["num_hidden_layers"] = "4"; },
                "\"num_hidden_layers\" is \"4\"; expected an integer"},
        BadCase{"groups_do_not_divide", [](json& j) { j["n_group"] = 3; },
                "n_routed_experts (16) is not divisible by n_group (3)"},
        BadCase{"topk_group_too_big", [](json& j) { j["topk_group"] = 5; },
                "topk_group (5) exceeds n_group (4)"},
        BadCase{"too_many_experts_per_token", [](json& j) { j["num_experts_per_tok"] = 9; },
                "exceeds the experts in the top 2 groups (8)"},
        BadCase{"odd_rope_dim", [](json& j) { j["qk_rope_head_dim"] = 31; },
                "qk_rope_head_dim must be even"},
        BadCase{"dense_layers_beyond_depth", [](json& j) { j["first_k_dense_replace"] = 9; },
                "first_k_dense_replace (9)"},
        BadCase{"unknown_scoring", [](json& j) { j["scoring_func"] = "relu"; },
                "scoring_func \"relu\""},
        BadCase{"linear_rope_scaling",
                [](json& j) {
                  j["rope_scaling"] = {{"type", "linear"}};
                },
                "rope_scaling type \"linear\" is not supported"},
        BadCase{"eos_outside_vocab", [](json& j) { j["eos_token_id"] = 5000; },
                "eos_token_id 5000 is outside the vocabulary"},
        BadCase{"negative_rank", [](json& j) { j["kv_lora_rank"] = -1; },
                "\"kv_lora_rank\" must be positive"},
        BadCase{"gelu", [](json& j) { j["hidden_act"] = "gelu"; }, "hidden_act \"gelu\""},
        BadCase{"qwen_heads_not_multiple", [](json& j) { j["num_key_value_heads"] = 3; },
                "num_attention_heads (8) is not a multiple of num_key_value_heads (3)"},
        BadCase{"qwen_mlp_only_out_of_range", [](json& j) { j["mlp_only_layers"] = {7}; },
                "mlp_only_layers entry 7"},
        BadCase{"qwen_topk_beyond_experts", [](json& j) { j["num_experts_per_tok"] = 17; },
                "num_experts_per_tok (17) exceeds num_experts (16)"}),
    [](const auto& info) { return info.param.name; });

TEST(ConfigTest, RejectsNonObject) { EXPECT_FALSE(ParseModelConfig(json::array()).ok()); }

}  // namespace
}  // namespace moeserve
