#include "runtime/model/config.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "runtime/model/config_fields.h"
#include "runtime/model/deepseek_v4_config.h"

namespace moeserve {
namespace {

using nlohmann::json;

using config_internal::FieldReader;
using config_internal::Invalid;
using config_internal::RequirePositive;

absl::Status ParseRopeScaling(const json& j, ModelConfig& c) {
  if (!j.contains("rope_scaling") || j.at("rope_scaling").is_null()) return absl::OkStatus();
  const json& rs = j.at("rope_scaling");
  if (!rs.is_object()) return Invalid("\"rope_scaling\" must be an object or null");
  FieldReader r(rs);
  std::string type;
  MOESERVE_ASSIGN(type, r.String("type", ""));
  if (type.empty()) MOESERVE_ASSIGN(type, r.String("rope_type", ""));
  if (type != "yarn") {
    return Invalid(absl::StrCat("rope_scaling type \"", type,
                                "\" is not supported; moeserve implements \"yarn\""));
  }
  RopeParams& p = c.rope;
  p.yarn = true;
  MOESERVE_ASSIGN(p.factor, r.Number("factor", 1.0));
  MOESERVE_ASSIGN(p.beta_fast, r.Number("beta_fast", 32.0));
  MOESERVE_ASSIGN(p.beta_slow, r.Number("beta_slow", 1.0));
  MOESERVE_ASSIGN(p.mscale, r.Number("mscale", 1.0));
  MOESERVE_ASSIGN(p.mscale_all_dim, r.Number("mscale_all_dim", 0.0));
  MOESERVE_ASSIGN(p.original_max_position_embeddings,
                  r.Int("original_max_position_embeddings", 4096));
  if (!(p.factor >= 1.0))
    return Invalid(absl::StrCat("rope_scaling.factor must be >= 1, got ", p.factor));
  if (!(p.beta_fast > 0 && p.beta_slow > 0)) {
    return Invalid("rope_scaling.beta_fast and beta_slow must be positive");
  }
  return RequirePositive("rope_scaling.original_max_position_embeddings",
                         p.original_max_position_embeddings);
}

// `dense_mlp`: the architecture has dense MLP layers (intermediate_size).
absl::Status ParseCommon(const json& j, bool dense_mlp, ModelConfig& c) {
  FieldReader r(j);
  MOESERVE_ASSIGN(c.vocab_size, r.Int("vocab_size"));
  MOESERVE_ASSIGN(c.hidden_size, r.Int("hidden_size"));
  MOESERVE_ASSIGN(c.num_hidden_layers, r.Int("num_hidden_layers"));
  if (dense_mlp) MOESERVE_ASSIGN(c.intermediate_size, r.Int("intermediate_size"));
  MOESERVE_ASSIGN(c.num_attention_heads, r.Int("num_attention_heads"));
  MOESERVE_ASSIGN(c.max_position_embeddings, r.Int("max_position_embeddings"));
  double eps;
  MOESERVE_ASSIGN(eps, r.Number("rms_norm_eps", 1e-6));
  c.rms_norm_eps = static_cast<float>(eps);
  MOESERVE_ASSIGN(c.tie_word_embeddings, r.Bool("tie_word_embeddings", false));
  MOESERVE_ASSIGN(c.bos_token_id, r.Int("bos_token_id", -1));
  if (r.Has("eos_token_id")) {
    const json& e = j.at("eos_token_id");
    if (e.is_number_integer()) {
      c.eos_token_ids.push_back(e.get<int64_t>());
    } else if (e.is_array() && std::all_of(e.begin(), e.end(),
                                           [](const json& x) { return x.is_number_integer(); })) {
      for (const json& x : e) c.eos_token_ids.push_back(x.get<int64_t>());
    } else {
      return Invalid(absl::StrCat("\"eos_token_id\" must be an integer or a list of integers, got ",
                                  e.dump()));
    }
  }
  std::string act;
  MOESERVE_ASSIGN(act, r.String("hidden_act", "silu"));
  if (act != "silu") {
    return Invalid(absl::StrCat("hidden_act \"", act, "\" is not supported; expected \"silu\""));
  }
  double theta;
  MOESERVE_ASSIGN(theta, r.Number("rope_theta", 10000.0));
  c.rope.theta = theta;
  for (auto [name, v] : {std::pair{"vocab_size", c.vocab_size},
                         {"hidden_size", c.hidden_size},
                         {"num_hidden_layers", c.num_hidden_layers},
                         {"intermediate_size", dense_mlp ? c.intermediate_size : 1},
                         {"num_attention_heads", c.num_attention_heads},
                         {"max_position_embeddings", c.max_position_embeddings}}) {
    if (absl::Status s = RequirePositive(name, v); !s.ok()) return s;
  }
  for (int64_t eos : c.eos_token_ids) {
    if (eos < 0 || eos >= c.vocab_size) {
      return Invalid(
          absl::StrCat("eos_token_id ", eos, " is outside the vocabulary [0, ", c.vocab_size, ")"));
    }
  }
  if (!(c.rms_norm_eps > 0)) return Invalid("\"rms_norm_eps\" must be positive");
  return ParseRopeScaling(j, c);
}

absl::Status ParseDeepseekV3(const json& j, ModelConfig& c) {
  FieldReader r(j);
  c.arch = Architecture::kDeepseekV3;
  // q_lora_rank null means a single q_proj (DeepSeek-V2-Lite style).
  MOESERVE_ASSIGN(c.q_lora_rank, r.Int("q_lora_rank", 0));
  MOESERVE_ASSIGN(c.kv_lora_rank, r.Int("kv_lora_rank"));
  MOESERVE_ASSIGN(c.qk_nope_head_dim, r.Int("qk_nope_head_dim"));
  MOESERVE_ASSIGN(c.qk_rope_head_dim, r.Int("qk_rope_head_dim"));
  MOESERVE_ASSIGN(c.v_head_dim, r.Int("v_head_dim"));
  MOESERVE_ASSIGN(c.n_routed_experts, r.Int("n_routed_experts"));
  MOESERVE_ASSIGN(c.num_experts_per_tok, r.Int("num_experts_per_tok"));
  MOESERVE_ASSIGN(c.moe_intermediate_size, r.Int("moe_intermediate_size"));
  MOESERVE_ASSIGN(c.n_shared_experts, r.Int("n_shared_experts", 0));
  MOESERVE_ASSIGN(c.n_group, r.Int("n_group", 1));
  MOESERVE_ASSIGN(c.topk_group, r.Int("topk_group", 1));
  MOESERVE_ASSIGN(c.first_k_dense_replace, r.Int("first_k_dense_replace", 0));
  MOESERVE_ASSIGN(c.num_nextn_predict_layers, r.Int("num_nextn_predict_layers", 0));
  MOESERVE_ASSIGN(c.norm_topk_prob, r.Bool("norm_topk_prob", false));
  double scale;
  MOESERVE_ASSIGN(scale, r.Number("routed_scaling_factor", 1.0));
  c.routed_scaling_factor = static_cast<float>(scale);
  std::string scoring, topk_method;
  MOESERVE_ASSIGN(scoring, r.String("scoring_func", "softmax"));
  MOESERVE_ASSIGN(topk_method, r.String("topk_method", "noaux_tc"));
  if (scoring == "sigmoid") {
    c.scoring_func = ScoringFunc::kSigmoid;
  } else if (scoring == "softmax") {
    c.scoring_func = ScoringFunc::kSoftmax;
  } else {
    return Invalid(absl::StrCat("scoring_func \"", scoring,
                                "\" is not supported; expected \"sigmoid\" or \"softmax\""));
  }
  if (topk_method == "greedy") {
    c.n_group = 1;
    c.topk_group = 1;
  } else if (topk_method != "noaux_tc" && topk_method != "group_limited_greedy") {
    return Invalid(absl::StrCat("topk_method \"", topk_method,
                                "\" is not supported; expected noaux_tc, group_limited_greedy or "
                                "greedy"));
  }
  c.num_key_value_heads = c.num_attention_heads;
  for (auto [name, v] : {std::pair{"kv_lora_rank", c.kv_lora_rank},
                         {"qk_nope_head_dim", c.qk_nope_head_dim},
                         {"qk_rope_head_dim", c.qk_rope_head_dim},
                         {"v_head_dim", c.v_head_dim},
                         {"n_routed_experts", c.n_routed_experts},
                         {"num_experts_per_tok", c.num_experts_per_tok},
                         {"moe_intermediate_size", c.moe_intermediate_size},
                         {"n_group", c.n_group},
                         {"topk_group", c.topk_group}}) {
    if (absl::Status s = RequirePositive(name, v); !s.ok()) return s;
  }
  if (c.q_lora_rank < 0) return Invalid("\"q_lora_rank\" must be null or positive");
  if (c.qk_rope_head_dim % 2 != 0) {
    return Invalid(absl::StrCat("qk_rope_head_dim must be even, got ", c.qk_rope_head_dim));
  }
  if (c.n_routed_experts % c.n_group != 0) {
    return Invalid(absl::StrCat("n_routed_experts (", c.n_routed_experts,
                                ") is not divisible by n_group (", c.n_group, ")"));
  }
  if (c.topk_group > c.n_group) {
    return Invalid(
        absl::StrCat("topk_group (", c.topk_group, ") exceeds n_group (", c.n_group, ")"));
  }
  const int64_t eligible = c.topk_group * (c.n_routed_experts / c.n_group);
  if (c.num_experts_per_tok > eligible) {
    return Invalid(absl::StrCat("num_experts_per_tok (", c.num_experts_per_tok,
                                ") exceeds the experts in the top ", c.topk_group, " groups (",
                                eligible, ")"));
  }
  if (c.first_k_dense_replace < 0 || c.first_k_dense_replace > c.num_hidden_layers) {
    return Invalid(absl::StrCat("first_k_dense_replace (", c.first_k_dense_replace,
                                ") must be in [0, num_hidden_layers = ", c.num_hidden_layers, "]"));
  }
  if (c.n_shared_experts < 0) return Invalid("\"n_shared_experts\" must be >= 0");
  c.rope.rotary_dim = c.qk_rope_head_dim;
  return absl::OkStatus();
}

absl::Status ParseQwen3Moe(const json& j, ModelConfig& c) {
  FieldReader r(j);
  c.arch = Architecture::kQwen3Moe;
  MOESERVE_ASSIGN(c.num_key_value_heads, r.Int("num_key_value_heads", c.num_attention_heads));
  MOESERVE_ASSIGN(c.head_dim, r.Int("head_dim", c.hidden_size / c.num_attention_heads));
  MOESERVE_ASSIGN(c.n_routed_experts, r.Int("num_experts"));
  MOESERVE_ASSIGN(c.num_experts_per_tok, r.Int("num_experts_per_tok"));
  MOESERVE_ASSIGN(c.moe_intermediate_size, r.Int("moe_intermediate_size"));
  MOESERVE_ASSIGN(c.norm_topk_prob, r.Bool("norm_topk_prob", false));
  MOESERVE_ASSIGN(c.decoder_sparse_step, r.Int("decoder_sparse_step", 1));
  if (r.Has("mlp_only_layers")) {
    const json& m = j.at("mlp_only_layers");
    if (!m.is_array()) return Invalid("\"mlp_only_layers\" must be a list of layer indices");
    for (const json& x : m) {
      if (!x.is_number_integer() || x.get<int64_t>() < 0 ||
          x.get<int64_t>() >= c.num_hidden_layers) {
        return Invalid(absl::StrCat("mlp_only_layers entry ", x.dump(),
                                    " is not a layer index in [0, ", c.num_hidden_layers, ")"));
      }
      c.mlp_only_layers.push_back(x.get<int64_t>());
    }
  }
  bool bias;
  MOESERVE_ASSIGN(bias, r.Bool("attention_bias", false));
  if (bias) return Invalid("attention_bias true is not supported for qwen3_moe");
  c.scoring_func = ScoringFunc::kSoftmax;
  for (auto [name, v] : {std::pair{"num_key_value_heads", c.num_key_value_heads},
                         {"head_dim", c.head_dim},
                         {"num_experts", c.n_routed_experts},
                         {"num_experts_per_tok", c.num_experts_per_tok},
                         {"moe_intermediate_size", c.moe_intermediate_size},
                         {"decoder_sparse_step", c.decoder_sparse_step}}) {
    if (absl::Status s = RequirePositive(name, v); !s.ok()) return s;
  }
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return Invalid(absl::StrCat("num_attention_heads (", c.num_attention_heads,
                                ") is not a multiple of num_key_value_heads (",
                                c.num_key_value_heads, ")"));
  }
  if (c.head_dim % 2 != 0) return Invalid(absl::StrCat("head_dim must be even, got ", c.head_dim));
  if (c.num_experts_per_tok > c.n_routed_experts) {
    return Invalid(absl::StrCat("num_experts_per_tok (", c.num_experts_per_tok,
                                ") exceeds num_experts (", c.n_routed_experts, ")"));
  }
  c.rope.rotary_dim = c.head_dim;
  return absl::OkStatus();
}

}  // namespace

int64_t ModelConfig::kv_cache_width() const {
  if (arch == Architecture::kDeepseekV3) return kv_lora_rank + qk_rope_head_dim;
  return 2 * num_key_value_heads * head_dim;
}

KvRowLayout ModelConfig::kv_cache_row(KvCacheDtype dtype) const {
  if (arch == Architecture::kDeepseekV3) {
    return MlaKvRowLayout(dtype, kv_lora_rank, qk_rope_head_dim);
  }
  return GqaKvRowLayout(dtype, num_key_value_heads, head_dim);
}

bool ModelConfig::IsMoeLayer(int64_t layer) const {
  if (arch == Architecture::kDeepseekV4) return true;
  if (arch == Architecture::kDeepseekV3) return layer >= first_k_dense_replace;
  if (std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) != mlp_only_layers.end()) {
    return false;
  }
  return (layer + 1) % decoder_sparse_step == 0;
}

float ModelConfig::softmax_scale() const {
  if (arch == Architecture::kQwen3Moe) return static_cast<float>(1.0 / std::sqrt(head_dim));
  double scale = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
  if (rope.yarn && rope.mscale_all_dim != 0.0) {
    const double m = YarnMscale(rope.factor, rope.mscale_all_dim);
    scale *= m * m;
  }
  return static_cast<float>(scale);
}

bool ModelConfig::IsEos(int32_t token) const {
  return std::find(eos_token_ids.begin(), eos_token_ids.end(), token) != eos_token_ids.end();
}

absl::StatusOr<ModelConfig> ParseModelConfig(const json& j) {
  if (!j.is_object()) return Invalid("expected a JSON object");
  ModelConfig c;
  MOESERVE_ASSIGN(c.model_type, FieldReader(j).String("model_type", ""));
  const bool v4 = c.model_type == "deepseek_v4";
  if (absl::Status s = ParseCommon(j, /*dense_mlp=*/!v4, c); !s.ok()) return s;
  absl::Status s;
  if (c.model_type == "deepseek_v3" || c.model_type == "kimi_k2") {
    s = ParseDeepseekV3(j, c);
  } else if (c.model_type == "qwen3_moe") {
    s = ParseQwen3Moe(j, c);
  } else if (v4) {
    s = ParseDeepseekV4Config(j, c);
  } else {
    return Invalid(absl::StrCat("model_type \"", c.model_type,
                                "\" is not supported; expected one of deepseek_v3, kimi_k2, "
                                "qwen3_moe, deepseek_v4"));
  }
  if (!s.ok()) return s;
  return c;
}

}  // namespace moeserve
