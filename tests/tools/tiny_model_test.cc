// Tiny checkpoints: every architecture and dtype writes a checkpoint that
// Checkpoint reads back whole, in the published layout (tensor names, shapes
// derived here independently from config.json, dtypes, FP8 scales, MTP), and
// the same seed always gives the same bytes; the published tokenizer files
// come along, covered by the vocabulary and agreeing with config.json.
#include "tools/tiny_model/tiny_model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "nlohmann/json.hpp"
#include "runtime/checkpoint/checkpoint.h"
#include "scheduler/tokenizer/tokenizer.h"

namespace moeserve {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;
using Shapes = std::map<std::string, std::vector<int64_t>>;

std::string Slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string TestDir(const std::string& suffix) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = std::string(info->test_suite_name()) + "_" + info->name() + "_" + suffix;
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  const fs::path dir = fs::path(::testing::TempDir()) / ("moeserve_tiny_" + name);
  fs::remove_all(dir);
  return dir.string();
}

std::string Make(TinyArch arch, TinyDtype dtype, uint64_t seed, int shards,
                 const std::string& suffix) {
  TinyModelOptions o;
  o.arch = arch;
  o.dtype = dtype;
  o.seed = seed;
  o.num_shards = shards;
  o.out_dir = TestDir(suffix);
  absl::Status s = MakeTinyModel(o);
  EXPECT_TRUE(s.ok()) << s;
  return o.out_dir;
}

int64_t I(const json& c, const char* key) { return c.at(key).get<int64_t>(); }

void AddMlp(Shapes& s, const std::string& p, int64_t hidden, int64_t inter) {
  s[p + ".gate_proj.weight"] = {inter, hidden};
  s[p + ".up_proj.weight"] = {inter, hidden};
  s[p + ".down_proj.weight"] = {hidden, inter};
}

// The published DeepSeek-V3 / Kimi K2 layout, from config.json alone.
Shapes DeepseekLayout(const json& c) {
  const int64_t v = I(c, "vocab_size"), h = I(c, "hidden_size"),
                heads = I(c, "num_attention_heads");
  const int64_t nope = I(c, "qk_nope_head_dim"), rope = I(c, "qk_rope_head_dim");
  const int64_t q_lora = I(c, "q_lora_rank"), kv_lora = I(c, "kv_lora_rank");
  const int64_t experts = I(c, "n_routed_experts"), mi = I(c, "moe_intermediate_size");
  const int64_t layers = I(c, "num_hidden_layers");
  Shapes s = {{"model.embed_tokens.weight", {v, h}},
              {"model.norm.weight", {h}},
              {"lm_head.weight", {v, h}}};
  for (int64_t i = 0; i < layers + I(c, "num_nextn_predict_layers"); ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    s[p + "input_layernorm.weight"] = {h};
    s[p + "post_attention_layernorm.weight"] = {h};
    s[p + "self_attn.q_a_proj.weight"] = {q_lora, h};
    s[p + "self_attn.q_a_layernorm.weight"] = {q_lora};
    s[p + "self_attn.q_b_proj.weight"] = {heads * (nope + rope), q_lora};
    s[p + "self_attn.kv_a_proj_with_mqa.weight"] = {kv_lora + rope, h};
    s[p + "self_attn.kv_a_layernorm.weight"] = {kv_lora};
    s[p + "self_attn.kv_b_proj.weight"] = {heads * (nope + I(c, "v_head_dim")), kv_lora};
    s[p + "self_attn.o_proj.weight"] = {h, heads * I(c, "v_head_dim")};
    if (i < I(c, "first_k_dense_replace")) {
      AddMlp(s, p + "mlp", h, I(c, "intermediate_size"));
    } else {
      s[p + "mlp.gate.weight"] = {experts, h};
      s[p + "mlp.gate.e_score_correction_bias"] = {experts};
      for (int64_t e = 0; e < experts; ++e) {
        AddMlp(s, p + "mlp.experts." + std::to_string(e), h, mi);
      }
      AddMlp(s, p + "mlp.shared_experts", h, I(c, "n_shared_experts") * mi);
    }
    if (i >= layers) {  // MTP module
      s[p + "enorm.weight"] = {h};
      s[p + "hnorm.weight"] = {h};
      s[p + "eh_proj.weight"] = {h, 2 * h};
      s[p + "shared_head.norm.weight"] = {h};
      s[p + "shared_head.head.weight"] = {v, h};
      s[p + "embed_tokens.weight"] = {v, h};
    }
  }
  return s;
}

// The published Qwen3-MoE layout, from config.json alone.
Shapes Qwen3MoeLayout(const json& c) {
  const int64_t v = I(c, "vocab_size"), h = I(c, "hidden_size"), hd = I(c, "head_dim");
  const int64_t heads = I(c, "num_attention_heads"), kv = I(c, "num_key_value_heads");
  Shapes s = {{"model.embed_tokens.weight", {v, h}}, {"model.norm.weight", {h}}};
  if (!c.at("tie_word_embeddings").get<bool>()) s["lm_head.weight"] = {v, h};
  const std::vector<int64_t> dense = c.at("mlp_only_layers").get<std::vector<int64_t>>();
  for (int64_t i = 0; i < I(c, "num_hidden_layers"); ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    s[p + "input_layernorm.weight"] = {h};
    s[p + "post_attention_layernorm.weight"] = {h};
    s[p + "self_attn.q_proj.weight"] = {heads * hd, h};
    s[p + "self_attn.k_proj.weight"] = {kv * hd, h};
    s[p + "self_attn.v_proj.weight"] = {kv * hd, h};
    s[p + "self_attn.o_proj.weight"] = {h, heads * hd};
    s[p + "self_attn.q_norm.weight"] = {hd};
    s[p + "self_attn.k_norm.weight"] = {hd};
    const bool sparse = std::find(dense.begin(), dense.end(), i) == dense.end() &&
                        (i + 1) % I(c, "decoder_sparse_step") == 0;
    if (!sparse) {
      AddMlp(s, p + "mlp", h, I(c, "intermediate_size"));
      continue;
    }
    s[p + "mlp.gate.weight"] = {I(c, "num_experts"), h};
    for (int64_t e = 0; e < I(c, "num_experts"); ++e) {
      AddMlp(s, p + "mlp.experts." + std::to_string(e), h, I(c, "moe_intermediate_size"));
    }
  }
  return s;
}

bool IsProjection(const std::string& name) {
  return name.ends_with("_proj.weight") || name.ends_with("_proj_with_mqa.weight");
}

// The decoder layer index of "model.layers.<i>.*", else -1.
int LayerOf(const std::string& name) {
  constexpr std::string_view kPrefix = "model.layers.";
  if (!name.starts_with(kPrefix)) return -1;
  const size_t dot = name.find('.', kPrefix.size());
  return std::stoi(name.substr(kPrefix.size(), dot - kPrefix.size()));
}

using Variant = std::tuple<TinyArch, TinyDtype>;

class TinyModelTest : public ::testing::TestWithParam<Variant> {
 protected:
  TinyArch arch() const { return std::get<0>(GetParam()); }
  TinyDtype dtype() const { return std::get<1>(GetParam()); }
  bool fp8() const { return dtype() == TinyDtype::kFp8; }
};

TEST_P(TinyModelTest, WritesThePublishedLayout) {
  const std::string dir = Make(arch(), dtype(), 7, 3, "a");
  for (const char* f :
       {"config.json", "model.safetensors.index.json", "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"}) {
    EXPECT_TRUE(fs::exists(fs::path(dir) / f)) << f;
  }
  EXPECT_FALSE(fs::exists(fs::path(dir) / "model.safetensors"));

  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const json& c = (*ckpt)->config_json();
  const bool qwen = arch() == TinyArch::kQwen3Moe;
  EXPECT_EQ(c.at("model_type"), qwen                          ? "qwen3_moe"
                                : arch() == TinyArch::kKimiK2 ? "kimi_k2"
                                                              : "deepseek_v3");
  EXPECT_EQ(c.at("architectures")[0], qwen ? "Qwen3MoeForCausalLM" : "DeepseekV3ForCausalLM");
  EXPECT_EQ(c.at("torch_dtype"), "bfloat16");
  EXPECT_EQ(c.contains("quantization_config"), fp8());
  if (fp8()) {
    EXPECT_EQ(c["quantization_config"],
              json::parse(R"({"activation_scheme": "dynamic", "fmt": "e4m3",
                              "quant_method": "fp8", "weight_block_size": [128, 128]})"));
  }
  const Shapes expected = qwen ? Qwen3MoeLayout(c) : DeepseekLayout(c);

  // Exactly the expected weights (plus a scale per FP8 weight), each of the
  // expected shape and dtype, readable in float32.
  const json index = json::parse(Slurp(fs::path(dir) / "model.safetensors.index.json"));
  std::map<int, std::string> shard_of_layer;
  std::set<std::string> shards_used;
  uint64_t total_bytes = 0;
  size_t weights = 0;
  for (const std::string& name : (*ckpt)->TensorNames()) {
    auto info = (*ckpt)->Info(name);
    ASSERT_TRUE(info.ok()) << info.status();
    total_bytes += info->end - info->begin;
    const std::string shard = index["weight_map"][name];
    shards_used.insert(shard);
    if (LayerOf(name) >= 0) {  // whole layers per shard
      auto [it, inserted] = shard_of_layer.emplace(LayerOf(name), shard);
      EXPECT_EQ(it->second, shard) << name;
    }
    if (name.ends_with("_scale_inv")) {
      ASSERT_TRUE(fp8()) << name;
      EXPECT_TRUE((*ckpt)->Has(name.substr(0, name.size() - 10))) << name;
      continue;
    }
    ++weights;
    ASSERT_TRUE(expected.contains(name)) << "unexpected tensor " << name;
    const std::vector<int64_t>& shape = expected.at(name);
    const bool bias = name.ends_with("e_score_correction_bias");
    const bool quantized = fp8() && IsProjection(name);
    EXPECT_EQ(info->dtype, bias ? DType::kF32 : quantized ? DType::kF8E4M3 : DType::kBF16) << name;
    if (quantized) {
      auto scale = (*ckpt)->Info(name + "_scale_inv");
      ASSERT_TRUE(scale.ok()) << scale.status();
      EXPECT_EQ(scale->dtype, DType::kF32);
      EXPECT_EQ(scale->shape,
                (std::vector<int64_t>{CeilDiv(shape[0], 128), CeilDiv(shape[1], 128)}))
          << name;
    }
    auto t = (*ckpt)->ReadF32(name, shape);
    ASSERT_TRUE(t.ok()) << t.status();
    for (int64_t i = 0; i < t->numel(); ++i) ASSERT_TRUE(std::isfinite(t->f32()[i])) << name;
  }
  EXPECT_EQ(weights, expected.size());
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total_bytes);
  EXPECT_EQ(shards_used.size(), 3u);
  // 17 MB (Kimi K2 FP8) to 34 MB (DeepSeek-V3 BF16), mostly embeddings and
  // heads of the published vocabularies.
  EXPECT_LT(total_bytes, 36u << 20);

  // DeepSeek-V3 ships the MTP module as layer num_hidden_layers; Kimi K2
  // (num_nextn_predict_layers 0) and Qwen3 do not.
  const bool mtp_expected = arch() == TinyArch::kDeepseekV3;
  EXPECT_EQ(c.value("num_nextn_predict_layers", 0) > 0, mtp_expected);
  const std::string mtp = "model.layers." + std::to_string(I(c, "num_hidden_layers")) + ".";
  EXPECT_EQ((*ckpt)->Has(mtp + "eh_proj.weight"), mtp_expected);
  EXPECT_EQ((*ckpt)->Has(mtp + "shared_head.head.weight"), mtp_expected);
  EXPECT_EQ((*ckpt)->Has(mtp + "input_layernorm.weight"), mtp_expected);
}

TEST_P(TinyModelTest, SameSeedSameBytesOtherSeedOtherValues) {
  const std::string a = Make(arch(), dtype(), 11, 3, "a");
  const std::string b = Make(arch(), dtype(), 11, 3, "b");
  const std::string other = Make(arch(), dtype(), 12, 3, "c");
  for (const char* f :
       {"config.json", "model.safetensors.index.json", "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"}) {
    const std::string bytes = Slurp(fs::path(a) / f);
    EXPECT_FALSE(bytes.empty()) << f;
    EXPECT_EQ(bytes, Slurp(fs::path(b) / f)) << f;
    const bool metadata_only = std::string(f).ends_with(".json");
    EXPECT_EQ(bytes == Slurp(fs::path(other) / f), metadata_only) << f;
  }
}

TEST_P(TinyModelTest, OneShardWritesASingleFileWithTheSameValues) {
  const std::string single = Make(arch(), dtype(), 5, 1, "single");
  const std::string sharded = Make(arch(), dtype(), 5, 2, "sharded");
  EXPECT_TRUE(fs::exists(fs::path(single) / "model.safetensors"));
  EXPECT_FALSE(fs::exists(fs::path(single) / "model.safetensors.index.json"));
  auto a = Checkpoint::Open(single);
  auto b = Checkpoint::Open(sharded);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  EXPECT_EQ((*a)->stats().shards_opened, 1);
  ASSERT_EQ((*a)->TensorNames(), (*b)->TensorNames());
  for (const std::string& name : (*a)->TensorNames()) {
    auto info = (*a)->Info(name);
    ASSERT_TRUE(info.ok());
    auto x = (*a)->ReadF32(name, info->shape);
    auto y = (*b)->ReadF32(name, info->shape);
    ASSERT_TRUE(x.ok() && y.ok()) << x.status() << y.status();
    ASSERT_EQ(0, std::memcmp(x->raw(), y->raw(), x->nbytes())) << name;
  }
  EXPECT_EQ((*a)->stats().shards_opened, 1);
}

class TinyModelFp8Test : public ::testing::TestWithParam<TinyArch> {};

// The FP8 checkpoint quantizes the same float32 weights the BF16 one rounds.
TEST_P(TinyModelFp8Test, HoldsTheSameWeightsAsBf16) {
  auto q = Checkpoint::Open(Make(GetParam(), TinyDtype::kFp8, 3, 2, "fp8"));
  auto r = Checkpoint::Open(Make(GetParam(), TinyDtype::kBf16, 3, 2, "bf16"));
  ASSERT_TRUE(q.ok() && r.ok()) << q.status() << r.status();
  for (const std::string& name : (*r)->TensorNames()) {
    auto info = (*q)->Info(name);
    ASSERT_TRUE(info.ok()) << info.status();
    auto a = (*q)->ReadF32(name, info->shape);
    auto b = (*r)->ReadF32(name, info->shape);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
    if (info->dtype != DType::kF8E4M3) {
      ASSERT_EQ(0, std::memcmp(a->raw(), b->raw(), a->nbytes())) << name;
      continue;
    }
    auto scale_info = (*q)->Info(name + "_scale_inv");
    ASSERT_TRUE(scale_info.ok());
    auto scale = (*q)->ReadF32(name + "_scale_inv", scale_info->shape);
    ASSERT_TRUE(scale.ok());
    const int64_t cols = info->shape[1];
    const int64_t scale_cols = scale_info->shape[1];
    for (int64_t i = 0; i < a->numel(); ++i) {
      const float s = scale->f32()[(i / cols / 128) * scale_cols + (i % cols) / 128];
      const float got = a->f32()[i];
      const float want = b->f32()[i];
      // e4m3 keeps 3 mantissa bits: rounding w / s to nearest is off by at
      // most 2^-4 of |w| in the normal range (|w / s| >= 2^-6) and by at most
      // half the subnormal spacing, 2^-10 * s, below it. The bf16 reference
      // is itself w rounded to 8 bits (2^-9 relative), hence 2^-4 + 2^-8.
      const float tol = (0x1p-4f + 0x1p-8f) * std::fabs(want) + 0x1p-10f * s;
      ASSERT_LE(std::fabs(got - want), tol) << name << " element " << i;
    }
  }
}

std::string ArchName(TinyArch arch) {
  static const char* const kArch[] = {"DeepseekV3", "KimiK2", "Qwen3Moe"};
  return kArch[static_cast<int>(arch)];
}

std::string VariantName(const ::testing::TestParamInfo<Variant>& info) {
  return ArchName(std::get<0>(info.param)) +
         (std::get<1>(info.param) == TinyDtype::kFp8 ? "Fp8" : "Bf16");
}

INSTANTIATE_TEST_SUITE_P(AllVariants, TinyModelTest,
                         ::testing::Combine(::testing::Values(TinyArch::kDeepseekV3,
                                                              TinyArch::kKimiK2,
                                                              TinyArch::kQwen3Moe),
                                            ::testing::Values(TinyDtype::kBf16, TinyDtype::kFp8)),
                         VariantName);

INSTANTIATE_TEST_SUITE_P(AllArchitectures, TinyModelFp8Test,
                         ::testing::Values(TinyArch::kDeepseekV3, TinyArch::kKimiK2,
                                           TinyArch::kQwen3Moe),
                         [](const ::testing::TestParamInfo<TinyArch>& info) {
                           return ArchName(info.param);
                         });

TEST(TinyModelConfigTest, ArchitectureSpecificFields) {
  auto config = [](TinyArch arch) {
    const std::string dir =
        Make(arch, TinyDtype::kBf16, 0, 1, std::to_string(static_cast<int>(arch)));
    return json::parse(Slurp(fs::path(dir) / "config.json"));
  };
  const json ds = config(TinyArch::kDeepseekV3);
  EXPECT_EQ(ds["hidden_size"], 32);
  EXPECT_EQ(ds["vocab_size"], 129280);
  EXPECT_EQ(ds["n_group"], 4);
  EXPECT_EQ(ds["topk_group"], 2);
  EXPECT_EQ(ds["routed_scaling_factor"], 2.5);
  EXPECT_EQ(ds["rope_scaling"]["factor"], 40);
  EXPECT_EQ(ds["rope_scaling"]["type"], "yarn");
  EXPECT_EQ(ds["num_key_value_heads"], ds["num_attention_heads"]);

  const json kimi = config(TinyArch::kKimiK2);
  EXPECT_EQ(kimi["vocab_size"], 129280);  // DeepSeek-V3's tokenizer, see tiny_model.cc
  EXPECT_EQ(kimi["n_group"], 1);
  EXPECT_EQ(kimi["n_routed_experts"], 24);
  EXPECT_EQ(kimi["num_experts_per_tok"], 6);
  EXPECT_EQ(kimi["routed_scaling_factor"], 2.827);
  EXPECT_EQ(kimi["rope_theta"], 50000.0);
  EXPECT_EQ(kimi["rope_scaling"]["beta_fast"], 1.0);

  const json qwen = config(TinyArch::kQwen3Moe);
  EXPECT_EQ(qwen["vocab_size"], 151936);
  EXPECT_NE(qwen["hidden_size"].get<int>(),
            qwen["num_attention_heads"].get<int>() * qwen["head_dim"].get<int>());
  EXPECT_TRUE(qwen["rope_scaling"].is_null());
  EXPECT_EQ(qwen["mlp_only_layers"], json::array({1}));
  EXPECT_FALSE(qwen.contains("num_nextn_predict_layers"));
}

// The tokenizer files are the published ones, the vocabulary covers them and
// config.json's BOS/EOS ids name the tokenizer's tokens.
TEST_P(TinyModelFp8Test, CarriesThePublishedTokenizer) {
  const std::string dir = Make(GetParam(), TinyDtype::kFp8, 0, 1, "tokenizer");
  const std::string published = DefaultTokenizerDir(GetParam());
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    const std::string bytes = Slurp(fs::path(dir) / f);
    EXPECT_FALSE(bytes.empty()) << f;
    EXPECT_EQ(bytes, Slurp(fs::path(published) / f)) << f;
  }
  auto tokenizer = Tokenizer::Load(dir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const json c = json::parse(Slurp(fs::path(dir) / "config.json"));
  EXPECT_LE((*tokenizer)->vocab_size(), c["vocab_size"].get<int>());
  EXPECT_EQ((*tokenizer)->eos_id(), c["eos_token_id"].get<int>());
  if (GetParam() == TinyArch::kQwen3Moe) {
    // Qwen3 names no BOS token; config.json's is <|endoftext|>, as published.
    EXPECT_FALSE((*tokenizer)->bos_id().has_value());
    EXPECT_EQ((*tokenizer)->TokenToId("<|endoftext|>"), c["bos_token_id"].get<int>());
    EXPECT_EQ(c["vocab_size"], 151936);
  } else {
    EXPECT_EQ((*tokenizer)->bos_id(), c["bos_token_id"].get<int>());
    EXPECT_EQ(c["vocab_size"], 129280);
  }
}

TEST(TinyModelOptionsTest, MissingTokenizerFilesSayHowToGetThem) {
  TinyModelOptions o;
  o.out_dir = TestDir("no_tokenizer");
  o.tokenizer_dir = TestDir("empty_tokenizer_dir");
  absl::Status s = MakeTinyModel(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), ::testing::AllOf(HasSubstr(o.tokenizer_dir + "/tokenizer.json"),
                                            HasSubstr("tools/setup.sh")));
  EXPECT_FALSE(fs::exists(o.out_dir)) << "nothing is written";
}

TEST(TinyModelOptionsTest, RewritingRemovesFilesOfAnEarlierLayout) {
  TinyModelOptions o;
  o.out_dir = TestDir("x");
  o.num_shards = 3;
  ASSERT_TRUE(MakeTinyModel(o).ok());
  o.num_shards = 2;
  ASSERT_TRUE(MakeTinyModel(o).ok());
  EXPECT_FALSE(fs::exists(fs::path(o.out_dir) / "model-00001-of-00003.safetensors"));
  EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "model-00002-of-00002.safetensors"));
  o.num_shards = 1;
  ASSERT_TRUE(MakeTinyModel(o).ok());
  EXPECT_FALSE(fs::exists(fs::path(o.out_dir) / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(fs::path(o.out_dir) / "model-00001-of-00002.safetensors"));
  auto ckpt = Checkpoint::Open(o.out_dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_TRUE((*ckpt)->Has("model.layers.3.eh_proj.weight"));
}

TEST(TinyModelOptionsTest, RejectsBadOptions) {
  TinyModelOptions o;
  o.out_dir = TestDir("bad");
  for (int shards : {0, -1, 100}) {
    o.num_shards = shards;
    absl::Status s = MakeTinyModel(o);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << shards;
    EXPECT_THAT(s.message(), HasSubstr("num_shards is " + std::to_string(shards)));
  }
  o.num_shards = 2;
  o.out_dir = "";
  EXPECT_EQ(MakeTinyModel(o).code(), absl::StatusCode::kInvalidArgument);
}

TEST(TinyModelOptionsTest, ParsesNamesAndListsTheAcceptedOnes) {
  EXPECT_EQ(*ParseTinyArch("deepseek_v3"), TinyArch::kDeepseekV3);
  EXPECT_EQ(*ParseTinyArch("kimi_k2"), TinyArch::kKimiK2);
  EXPECT_EQ(*ParseTinyArch("qwen3_moe"), TinyArch::kQwen3Moe);
  EXPECT_EQ(*ParseTinyDtype("bf16"), TinyDtype::kBf16);
  EXPECT_EQ(*ParseTinyDtype("fp8"), TinyDtype::kFp8);
  auto arch = ParseTinyArch("llama");
  EXPECT_EQ(arch.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      arch.status().message(),
      ::testing::AllOf(HasSubstr("\"llama\""), HasSubstr("deepseek_v3, kimi_k2, qwen3_moe")));
  auto dtype = ParseTinyDtype("fp16");
  EXPECT_THAT(dtype.status().message(),
              ::testing::AllOf(HasSubstr("\"fp16\""), HasSubstr("bf16, fp8")));
}

}  // namespace
}  // namespace moeserve
