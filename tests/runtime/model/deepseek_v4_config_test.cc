// DeepSeek-V4's config.json: every field of the published fixture, and the
// precise error of each kind of bad value.
#include <fstream>
#include <functional>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/model/config.h"

namespace moeserve {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

json V4Config() {
  std::ifstream in(std::string(MOESERVE_FIXTURES_DIR) + "/deepseek_v4_small/config.json");
  EXPECT_TRUE(in.good()) << "the deepseek_v4_small fixture is missing";
  return json::parse(in);
}

TEST(DeepseekV4ConfigTest, ParsesEveryFieldOfTheFixture) {
  auto c = ParseModelConfig(V4Config());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_type, "deepseek_v4");
  EXPECT_EQ(c->arch, Architecture::kDeepseekV4);
  EXPECT_EQ(c->vocab_size, 1000);
  EXPECT_EQ(c->hidden_size, 256);
  EXPECT_EQ(c->num_hidden_layers, 4);
  EXPECT_EQ(c->intermediate_size, 0);  // no dense layers
  EXPECT_EQ(c->max_position_embeddings, 1048576);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-6f);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->bos_token_id, 0);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(1));
  // Attention.
  EXPECT_EQ(c->num_attention_heads, 8);
  EXPECT_EQ(c->num_key_value_heads, 1);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->qk_rope_head_dim, 64);
  EXPECT_EQ(c->qk_nope_head_dim, 64);
  EXPECT_EQ(c->v_head_dim, 128);
  EXPECT_EQ(c->q_lora_rank, 128);
  EXPECT_EQ(c->v4.o_groups, 2);
  EXPECT_EQ(c->v4.o_lora_rank, 128);
  EXPECT_EQ(c->v4.sliding_window, 16);
  // RoPE: rope_theta on window-only layers, compress_rope_theta and YaRN on
  // compressed ones.
  EXPECT_DOUBLE_EQ(c->rope.theta, 10000.0);
  EXPECT_DOUBLE_EQ(c->v4.compress_rope_theta, 160000.0);
  EXPECT_EQ(c->rope.rotary_dim, 64);
  EXPECT_TRUE(c->rope.yarn);
  EXPECT_DOUBLE_EQ(c->rope.factor, 16.0);
  EXPECT_EQ(c->rope.original_max_position_embeddings, 65536);
  EXPECT_DOUBLE_EQ(c->rope.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(c->rope.beta_slow, 1.0);
  // Compression: window only, CSA, HCA, CSA; the MTP layer window only.
  EXPECT_THAT(c->v4.compress_ratios, ElementsAre(0, 4, 8, 4, 0));
  EXPECT_FALSE(c->v4.IsCsaLayer(0));
  EXPECT_TRUE(c->v4.IsCsaLayer(1));
  EXPECT_FALSE(c->v4.IsCsaLayer(2));
  EXPECT_EQ(c->v4.compressor_overlap(1), 2);
  EXPECT_EQ(c->v4.compressor_overlap(2), 1);
  EXPECT_EQ(c->v4.index_n_heads, 16);
  EXPECT_EQ(c->v4.index_head_dim, 128);
  EXPECT_EQ(c->v4.index_topk, 4);
  // mHC.
  EXPECT_EQ(c->v4.hc_mult, 4);
  EXPECT_EQ(c->v4.hc_sinkhorn_iters, 20);
  EXPECT_FLOAT_EQ(c->v4.hc_eps, 1e-6f);
  // MoE.
  EXPECT_EQ(c->n_routed_experts, 16);
  EXPECT_EQ(c->num_experts_per_tok, 4);
  EXPECT_EQ(c->moe_intermediate_size, 128);
  EXPECT_EQ(c->n_shared_experts, 1);
  EXPECT_EQ(c->n_group, 1);
  EXPECT_EQ(c->topk_group, 1);
  EXPECT_TRUE(c->norm_topk_prob);
  EXPECT_FLOAT_EQ(c->routed_scaling_factor, 1.5f);
  EXPECT_FLOAT_EQ(c->v4.swiglu_limit, 10.0f);
  EXPECT_EQ(c->v4.num_hash_layers, 2);
  EXPECT_TRUE(c->v4.IsHashLayer(1));
  EXPECT_FALSE(c->v4.IsHashLayer(2));
  EXPECT_EQ(c->v4.expert_dtype, ExpertDtype::kFp4);
  EXPECT_EQ(c->num_nextn_predict_layers, 1);
  for (int64_t l = 0; l < 4; ++l) EXPECT_TRUE(c->IsMoeLayer(l)) << l;
}

TEST(DeepseekV4ConfigTest, ExpertDtypeFp8AndOptionalFields) {
  json j = V4Config();
  j["expert_dtype"] = "fp8";
  j.erase("hc_eps");                            // defaults to 1e-6
  j["quantization_config"].erase("scale_fmt");  // float32 scales say nothing
  auto c = ParseModelConfig(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->v4.expert_dtype, ExpertDtype::kFp8);
  EXPECT_FLOAT_EQ(c->v4.hc_eps, 1e-6f);
}

TEST(DeepseekV4ConfigTest, WithoutCsaLayersTheIndexerFieldsAreNotNeeded) {
  json j = V4Config();
  j["compress_ratios"] = {0, 128, 8, 128, 0};
  for (const char* k : {"index_n_heads", "index_head_dim", "index_topk"}) j.erase(k);
  auto c = ParseModelConfig(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->v4.index_topk, 0);
}

struct BadCase {
  std::string name;
  std::function<void(json&)> edit;
  std::string message;
};

class BadV4ConfigTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadV4ConfigTest, IsRejectedWithAPreciseMessage) {
  json j = V4Config();
  GetParam().edit(j);
  auto c = ParseModelConfig(j);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadV4ConfigTest,
    ::testing::Values(
        BadCase{"ratios_missing", [](json& j) { j.erase("compress_ratios"); },
                "field \"compress_ratios\" is missing"},
        BadCase{"ratios_not_a_list", [](json& j) { j["compress_ratios"] = 4; },
                "field \"compress_ratios\" is 4; expected a list of integers"},
        BadCase{"ratios_without_mtp",
                [](json& j) {
                  j["compress_ratios"] = {0, 4, 8, 4};
                },
                "compress_ratios has 4 entries; expected one per layer and MTP layer, "
                "num_hidden_layers + num_nextn_predict_layers = 4 + 1 = 5"},
        BadCase{"ratio_not_integer", [](json& j) { j["compress_ratios"][2] = 8.5; },
                "compress_ratios[2] is 8.5; expected an integer"},
        BadCase{"ratio_one", [](json& j) { j["compress_ratios"][1] = 1; },
                "compress_ratios[1] is 1; expected 0 (sliding window only), 4 (CSA)"},
        BadCase{"ratio_negative", [](json& j) { j["compress_ratios"][3] = -4; },
                "compress_ratios[3] is -4"},
        BadCase{"o_groups_do_not_divide", [](json& j) { j["o_groups"] = 3; },
                "o_groups (3) does not divide num_attention_heads (8)"},
        BadCase{"o_lora_rank_zero", [](json& j) { j["o_lora_rank"] = 0; },
                "\"o_lora_rank\" must be positive, got 0"},
        BadCase{"sliding_window_missing", [](json& j) { j.erase("sliding_window"); },
                "field \"sliding_window\" is missing; expected an integer"},
        BadCase{"sliding_window_string", [](json& j) { j["sliding_window"] = "16"; },
                "field \"sliding_window\" is \"16\"; expected an integer"},
        BadCase{"two_kv_heads", [](json& j) { j["num_key_value_heads"] = 2; },
                "num_key_value_heads is 2; DeepSeek-V4 attention has one KV head"},
        BadCase{"rope_as_wide_as_head", [](json& j) { j["qk_rope_head_dim"] = 128; },
                "qk_rope_head_dim (128) must be even and smaller than head_dim (128)"},
        BadCase{"odd_rope", [](json& j) { j["qk_rope_head_dim"] = 63; },
                "qk_rope_head_dim (63) must be even"},
        BadCase{"no_q_lora", [](json& j) { j.erase("q_lora_rank"); },
                "field \"q_lora_rank\" is missing"},
        BadCase{"compress_theta_missing", [](json& j) { j.erase("compress_rope_theta"); },
                "field \"compress_rope_theta\" is missing; expected a number"},
        BadCase{"compress_theta_zero", [](json& j) { j["compress_rope_theta"] = 0; },
                "\"compress_rope_theta\" must be positive, got 0"},
        BadCase{"index_topk_missing", [](json& j) { j.erase("index_topk"); },
                "field \"index_topk\" is missing"},
        BadCase{"index_heads_zero", [](json& j) { j["index_n_heads"] = 0; },
                "\"index_n_heads\" must be positive, got 0"},
        BadCase{"hc_mult_zero", [](json& j) { j["hc_mult"] = 0; },
                "\"hc_mult\" must be positive, got 0"},
        BadCase{"sinkhorn_missing", [](json& j) { j.erase("hc_sinkhorn_iters"); },
                "field \"hc_sinkhorn_iters\" is missing"},
        BadCase{"hc_eps_negative", [](json& j) { j["hc_eps"] = -1e-6; },
                "\"hc_eps\" must be positive"},
        BadCase{"hash_layers_beyond_depth", [](json& j) { j["num_hash_layers"] = 5; },
                "num_hash_layers (5) must be in [0, num_hidden_layers = 4]"},
        BadCase{"hash_layers_missing", [](json& j) { j.erase("num_hash_layers"); },
                "field \"num_hash_layers\" is missing"},
        BadCase{"swiglu_limit_missing", [](json& j) { j.erase("swiglu_limit"); },
                "field \"swiglu_limit\" is missing; expected a number"},
        BadCase{"swiglu_limit_negative", [](json& j) { j["swiglu_limit"] = -1.0; },
                "\"swiglu_limit\" must be >= 0 (0: no clamp), got -1"},
        BadCase{"sigmoid_scoring", [](json& j) { j["scoring_func"] = "sigmoid"; },
                "scoring_func \"sigmoid\" is not supported for deepseek_v4; its routing is "
                "\"sqrtsoftplus\""},
        BadCase{"scoring_missing", [](json& j) { j.erase("scoring_func"); },
                "field \"scoring_func\" is missing"},
        BadCase{"group_limited", [](json& j) { j["n_group"] = 4; },
                "n_group 4 and topk_group 1: DeepSeek-V4 routes without a group limit"},
        BadCase{"greedy_topk", [](json& j) { j["topk_method"] = "greedy"; },
                "topk_method \"greedy\" is not supported for deepseek_v4"},
        BadCase{"topk_beyond_experts", [](json& j) { j["num_experts_per_tok"] = 17; },
                "num_experts_per_tok (17) exceeds n_routed_experts (16)"},
        BadCase{"routed_scale_zero", [](json& j) { j["routed_scaling_factor"] = 0; },
                "\"routed_scaling_factor\" must be positive, got 0"},
        BadCase{"expert_dtype_missing", [](json& j) { j.erase("expert_dtype"); },
                "field \"expert_dtype\" is missing; expected \"fp4\" or \"fp8\""},
        BadCase{"expert_dtype_bf16", [](json& j) { j["expert_dtype"] = "bf16"; },
                "expert_dtype \"bf16\" is not supported; expected \"fp4\" or \"fp8\""},
        BadCase{"fp4_inputs_not_whole_blocks", [](json& j) { j["moe_intermediate_size"] = 144; },
                "moe_intermediate_size (144) is not a multiple of 32"},
        BadCase{"no_quantization", [](json& j) { j.erase("quantization_config"); },
                "field \"quantization_config\" is missing"},
        BadCase{"int8_quantization",
                [](json& j) { j["quantization_config"]["quant_method"] = "int8"; },
                "quantization_config.quant_method is \"int8\""},
        BadCase{"e5m2", [](json& j) { j["quantization_config"]["fmt"] = "e5m2"; },
                "quantization_config.fmt is \"e5m2\""},
        BadCase{"float_scale_fmt", [](json& j) { j["quantization_config"]["scale_fmt"] = "fp16"; },
                "quantization_config.scale_fmt is \"fp16\""},
        BadCase{"block_64",
                [](json& j) { j["quantization_config"]["weight_block_size"] = {64, 64}; },
                "quantization_config.weight_block_size is [64,64]"},
        BadCase{"tied_embeddings", [](json& j) { j["tie_word_embeddings"] = true; },
                "tie_word_embeddings true is not supported for deepseek_v4"},
        BadCase{"attention_bias", [](json& j) { j["attention_bias"] = true; },
                "attention_bias true is not supported for deepseek_v4"},
        BadCase{"negative_mtp", [](json& j) { j["num_nextn_predict_layers"] = -1; },
                "\"num_nextn_predict_layers\" must be >= 0, got -1"},
        BadCase{"yarn_factor_below_one", [](json& j) { j["rope_scaling"]["factor"] = 0.5; },
                "rope_scaling.factor must be >= 1"},
        BadCase{"hidden_missing", [](json& j) { j.erase("hidden_size"); },
                "field \"hidden_size\" is missing"}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace moeserve
