#include "runtime/worker/model_info.h"

#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moeserve {
namespace {

using ::testing::ElementsAre;

nlohmann::json ReadConfig(const std::string& dir) {
  std::ifstream in(dir + "/config.json");
  EXPECT_TRUE(in.good()) << "cannot read " << dir << "/config.json";
  return nlohmann::json::parse(in);
}

TEST(ModelInfoTest, DescribesTheGoldenFixtures) {
  for (const char* name : {"deepseek_v3_small_bf16", "deepseek_v3_small_fp8"}) {
    const std::string dir = std::string(MOESERVE_FIXTURES_DIR) + "/" + name;
    const nlohmann::json json = ReadConfig(dir);
    auto config = ParseModelConfig(json);
    ASSERT_TRUE(config.ok()) << config.status();
    const v1::ModelInfo info = DescribeModel(*config, json, dir + "/");
    EXPECT_EQ(info.model_type(), "deepseek_v3");
    EXPECT_EQ(info.model_name(), name) << "the directory's name, trailing slash or not";
    EXPECT_EQ(info.vocab_size(), 1000u);
    EXPECT_EQ(info.max_context_tokens(), 163840u);
    EXPECT_EQ(info.num_layers(), 4u);
    EXPECT_EQ(info.num_routed_experts(), 16u);
    EXPECT_EQ(info.experts_per_token(), 4u);
    EXPECT_THAT(info.eos_token_ids(), ElementsAre(1u));
    EXPECT_EQ(info.world_size(), 0u) << "left to the coordinator";
    EXPECT_EQ(info.weight_dtype(), std::string(name).ends_with("fp8") ? "fp8" : "bf16");
  }
}

TEST(ModelInfoTest, WeightDtypeFromTorchDtypeOrQuantization) {
  EXPECT_EQ(WeightDtype(nlohmann::json::parse(R"({"torch_dtype": "bfloat16"})")), "bf16");
  EXPECT_EQ(WeightDtype(nlohmann::json::parse(R"({"torch_dtype": "float32"})")), "f32");
  EXPECT_EQ(WeightDtype(nlohmann::json::parse(
                R"({"torch_dtype": "bfloat16", "quantization_config": {"quant_method": "fp8"}})")),
            "fp8");
  EXPECT_EQ(WeightDtype(nlohmann::json::parse("{}")), "unknown");
}

}  // namespace
}  // namespace moeserve
