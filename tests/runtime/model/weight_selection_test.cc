// A rank that holds some experts reads exactly their tensors and the dense
// ones, and never opens a shard that holds none of them.
#include <fstream>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/runtime/model/model_test_util.h"
#include "tools/tiny_model/tiny_model.h"

namespace moeserve::testing {
namespace {

// Expert id of "model.layers.L.mlp.experts.E.*", or -1.
int ExpertOf(const std::string& name) {
  const std::string key = ".mlp.experts.";
  const size_t at = name.find(key);
  if (at == std::string::npos) return -1;
  return std::stoi(name.substr(at + key.size()));
}

int LayerOf(const std::string& name) {
  if (name.rfind("model.layers.", 0) != 0) return -1;
  return std::stoi(name.substr(std::string("model.layers.").size()));
}

TEST(WeightSelectionTest, ReadsOnlyTheSelectedExpertsAndSkipsTheMtpModule) {
  for (const char* dtype : {"bf16", "fp8"}) {
    // Six shards put the MTP layer in a shard of its own, which must stay closed.
    const std::string dir = ::testing::TempDir() + "/selection_" + dtype;
    TinyModelOptions options;
    options.dtype = *ParseTinyDtype(dtype);
    options.out_dir = dir;
    options.num_shards = 6;
    ASSERT_TRUE(MakeTinyModel(options).ok());
    std::ifstream in(dir + "/model.safetensors.index.json");
    const auto weight_map = nlohmann::json::parse(in).at("weight_map");
    auto checkpoint = Checkpoint::Open(dir);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    const int layers = (*checkpoint)->config_json().at("num_hidden_layers").get<int>();

    const std::set<int> wanted_experts = {0, 3};
    std::set<std::string> expected_shards;
    int64_t expected_tensors = 0;
    for (const auto& [name, shard] : weight_map.items()) {
      const int expert = ExpertOf(name);
      if (LayerOf(name) >= layers) continue;                           // MTP module
      if (expert >= 0 && wanted_experts.count(expert) == 0) continue;  // another rank's
      ++expected_tensors;  // weights and their scale_inv siblings alike
      expected_shards.insert(shard.get<std::string>());
    }
    auto backend = CreateCpuBackend();
    WeightSelection selection;
    selection.experts = {0, 3};
    auto model = LoadModel(**checkpoint, selection, *backend);
    ASSERT_TRUE(model.ok()) << model.status();
    ASSERT_LT(expected_shards.size(), 6u) << "the layout no longer isolates a shard";
    EXPECT_EQ((*checkpoint)->stats().tensors_read, expected_tensors) << dtype;
    EXPECT_EQ((*checkpoint)->stats().shards_opened, static_cast<int64_t>(expected_shards.size()))
        << dtype;
  }
}

TEST(WeightSelectionTest, RejectsExpertIdsOutsideTheModel) {
  const std::string dir = MakeTinyForTest("qwen3_moe", "bf16");
  auto checkpoint = Checkpoint::Open(dir);
  ASSERT_TRUE(checkpoint.ok());
  auto backend = CreateCpuBackend();
  WeightSelection selection;
  selection.experts = {1, 99};
  auto model = LoadModel(**checkpoint, selection, *backend);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("expert id 99"), std::string::npos);
}

}  // namespace
}  // namespace moeserve::testing
