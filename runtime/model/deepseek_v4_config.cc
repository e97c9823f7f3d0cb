#include "runtime/model/deepseek_v4_config.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/model/config.h"
#include "runtime/model/config_fields.h"

namespace moeserve {
namespace {

using config_internal::FieldReader;
using config_internal::Invalid;
using config_internal::RequirePositive;
using nlohmann::json;

// A string field that must be present and one of `allowed`.
absl::StatusOr<std::string> RequiredString(const FieldReader& r, absl::string_view key,
                                           absl::string_view expected) {
  if (!r.Has(key)) return FieldReader::Missing(key, expected);
  return r.String(key, "");
}

absl::StatusOr<double> RequiredNumber(const FieldReader& r, absl::string_view key) {
  if (!r.Has(key)) return FieldReader::Missing(key, "a number");
  return r.Number(key, 0.0);
}

absl::Status ParseCompressRatios(const json& j, const ModelConfig& c, DeepseekV4Params& v4) {
  const auto it = j.find("compress_ratios");
  if (it == j.end() || it->is_null()) {
    return FieldReader::Missing("compress_ratios",
                                "a list of integers, one per layer and MTP layer");
  }
  if (!it->is_array()) {
    return FieldReader::Wrong("compress_ratios", "a list of integers", *it);
  }
  const int64_t expected = c.num_hidden_layers + c.num_nextn_predict_layers;
  if (static_cast<int64_t>(it->size()) != expected) {
    return Invalid(absl::StrCat("compress_ratios has ", it->size(),
                                " entries; expected one per layer and MTP layer, "
                                "num_hidden_layers + num_nextn_predict_layers = ",
                                c.num_hidden_layers, " + ", c.num_nextn_predict_layers, " = ",
                                expected));
  }
  for (size_t i = 0; i < it->size(); ++i) {
    const json& r = (*it)[i];
    if (!r.is_number_integer()) {
      return Invalid(
          absl::StrCat("compress_ratios[", i, "] is ", r.dump(), "; expected an integer"));
    }
    const int64_t ratio = r.get<int64_t>();
    if (ratio < 0 || ratio == 1) {
      return Invalid(absl::StrCat("compress_ratios[", i, "] is ", ratio,
                                  "; expected 0 (sliding window only), 4 (CSA) or another "
                                  "ratio >= 2 (HCA)"));
    }
    v4.compress_ratios.push_back(ratio);
  }
  return absl::OkStatus();
}

// The FP8 layout every V4 linear is in: e4m3 with 128x128 power-of-two
// (ue8m0) block scales, activations quantized on the fly.
absl::Status ParseQuantization(const json& j) {
  const auto q = j.find("quantization_config");
  if (q == j.end() || q->is_null()) {
    return Invalid(
        "field \"quantization_config\" is missing; DeepSeek-V4 checkpoints are published in FP8 "
        "(quant_method fp8, fmt e4m3, weight_block_size [128, 128]) and moeserve reads that "
        "layout");
  }
  if (!q->is_object()) return FieldReader::Wrong("quantization_config", "an object", *q);
  const auto check = [&](const char* key, const char* want, bool required) -> absl::Status {
    const auto v = q->find(key);
    if (v == q->end() || v->is_null()) {
      return required ? Invalid(absl::StrCat("quantization_config.", key,
                                             " is missing; expected \"", want, "\""))
                      : absl::OkStatus();
    }
    if (!v->is_string() || v->get<std::string>() != want) {
      return Invalid(absl::StrCat("quantization_config.", key, " is ", v->dump(),
                                  "; moeserve reads DeepSeek-V4 checkpoints with \"", want, "\""));
    }
    return absl::OkStatus();
  };
  if (absl::Status s = check("quant_method", "fp8", true); !s.ok()) return s;
  if (absl::Status s = check("fmt", "e4m3", false); !s.ok()) return s;
  if (absl::Status s = check("activation_scheme", "dynamic", false); !s.ok()) return s;
  // scale_fmt ue8m0 says the scales are powers of two; checkpoints with
  // float32 scales may say nothing. The tensors' dtypes decide either way.
  if (absl::Status s = check("scale_fmt", "ue8m0", false); !s.ok()) return s;
  const auto b = q->find("weight_block_size");
  if (b == q->end() || *b != json::array({128, 128})) {
    return Invalid(absl::StrCat(
        "quantization_config.weight_block_size is ", b == q->end() ? "missing" : b->dump(),
        "; DeepSeek-V4's FP8 linears and their activations are quantized in blocks of "
        "[128, 128]"));
  }
  return absl::OkStatus();
}

absl::Status ParseRouting(const json& j, ModelConfig& c) {
  FieldReader r(j);
  std::string scoring, topk_method;
  MOESERVE_ASSIGN(scoring, RequiredString(r, "scoring_func", "\"sqrtsoftplus\""));
  if (scoring != "sqrtsoftplus") {
    return Invalid(absl::StrCat("scoring_func \"", scoring,
                                "\" is not supported for deepseek_v4; its routing is "
                                "\"sqrtsoftplus\""));
  }
  MOESERVE_ASSIGN(topk_method, r.String("topk_method", "noaux_tc"));
  if (topk_method != "noaux_tc") {
    return Invalid(absl::StrCat("topk_method \"", topk_method,
                                "\" is not supported for deepseek_v4; it selects \"noaux_tc\" "
                                "(scores plus the gate's bias)"));
  }
  MOESERVE_ASSIGN(c.n_group, r.Int("n_group", 1));
  MOESERVE_ASSIGN(c.topk_group, r.Int("topk_group", 1));
  if (c.n_group != 1 || c.topk_group != 1) {
    return Invalid(absl::StrCat("n_group ", c.n_group, " and topk_group ", c.topk_group,
                                ": DeepSeek-V4 routes without a group limit; expected 1 and 1"));
  }
  MOESERVE_ASSIGN(c.n_routed_experts, r.Int("n_routed_experts"));
  MOESERVE_ASSIGN(c.num_experts_per_tok, r.Int("num_experts_per_tok"));
  MOESERVE_ASSIGN(c.moe_intermediate_size, r.Int("moe_intermediate_size"));
  MOESERVE_ASSIGN(c.n_shared_experts, r.Int("n_shared_experts", 0));
  MOESERVE_ASSIGN(c.norm_topk_prob, r.Bool("norm_topk_prob", true));
  double scale;
  MOESERVE_ASSIGN(scale, r.Number("routed_scaling_factor", 1.0));
  c.routed_scaling_factor = static_cast<float>(scale);
  for (auto [name, v] : {std::pair{"n_routed_experts", c.n_routed_experts},
                         {"num_experts_per_tok", c.num_experts_per_tok},
                         {"moe_intermediate_size", c.moe_intermediate_size}}) {
    if (absl::Status s = RequirePositive(name, v); !s.ok()) return s;
  }
  if (c.num_experts_per_tok > c.n_routed_experts) {
    return Invalid(absl::StrCat("num_experts_per_tok (", c.num_experts_per_tok,
                                ") exceeds n_routed_experts (", c.n_routed_experts, ")"));
  }
  if (c.n_shared_experts < 0) {
    return Invalid(absl::StrCat("\"n_shared_experts\" must be >= 0, got ", c.n_shared_experts));
  }
  if (!(c.routed_scaling_factor > 0)) {
    return Invalid(absl::StrCat("\"routed_scaling_factor\" must be positive, got ", scale));
  }
  return absl::OkStatus();
}

// Attention: one shared KV head of head_dim, queries through a LoRA.
absl::Status ParseAttention(const json& j, ModelConfig& c) {
  FieldReader r(j);
  DeepseekV4Params& v4 = c.v4;
  MOESERVE_ASSIGN(c.num_key_value_heads, r.Int("num_key_value_heads"));
  MOESERVE_ASSIGN(c.head_dim, r.Int("head_dim"));
  MOESERVE_ASSIGN(c.qk_rope_head_dim, r.Int("qk_rope_head_dim"));
  MOESERVE_ASSIGN(c.q_lora_rank, r.Int("q_lora_rank"));
  MOESERVE_ASSIGN(v4.o_groups, r.Int("o_groups"));
  MOESERVE_ASSIGN(v4.o_lora_rank, r.Int("o_lora_rank"));
  MOESERVE_ASSIGN(v4.sliding_window, r.Int("sliding_window"));
  for (auto [name, v] : {std::pair{"head_dim", c.head_dim},
                         {"qk_rope_head_dim", c.qk_rope_head_dim},
                         {"q_lora_rank", c.q_lora_rank},
                         {"o_groups", v4.o_groups},
                         {"o_lora_rank", v4.o_lora_rank},
                         {"sliding_window", v4.sliding_window}}) {
    if (absl::Status s = RequirePositive(name, v); !s.ok()) return s;
  }
  if (c.num_key_value_heads != 1) {
    return Invalid(absl::StrCat("num_key_value_heads is ", c.num_key_value_heads,
                                "; DeepSeek-V4 attention has one KV head shared by all heads"));
  }
  if (c.qk_rope_head_dim % 2 != 0 || c.qk_rope_head_dim >= c.head_dim) {
    return Invalid(absl::StrCat("qk_rope_head_dim (", c.qk_rope_head_dim,
                                ") must be even and smaller than head_dim (", c.head_dim,
                                "): RoPE covers the last qk_rope_head_dim dims of a head"));
  }
  if (c.num_attention_heads % v4.o_groups != 0) {
    return Invalid(absl::StrCat("o_groups (", v4.o_groups,
                                ") does not divide num_attention_heads (", c.num_attention_heads,
                                "): the output projection takes the heads in equal groups"));
  }
  bool bias;
  MOESERVE_ASSIGN(bias, r.Bool("attention_bias", false));
  if (bias) return Invalid("attention_bias true is not supported for deepseek_v4");
  c.qk_nope_head_dim = c.head_dim - c.qk_rope_head_dim;
  c.v_head_dim = c.head_dim;  // values are the keys: one KV vector per token
  c.rope.rotary_dim = c.qk_rope_head_dim;
  return absl::OkStatus();
}

// Compression (CSA/HCA and the indexer), mHC and hash routing.
absl::Status ParseV4Blocks(const json& j, ModelConfig& c) {
  FieldReader r(j);
  DeepseekV4Params& v4 = c.v4;
  if (absl::Status s = ParseCompressRatios(j, c, v4); !s.ok()) return s;
  bool any_compressed = false, any_csa = false;
  for (int64_t ratio : v4.compress_ratios) {
    any_compressed |= ratio > 0;
    any_csa |= ratio == 4;
  }
  if (any_compressed) {
    MOESERVE_ASSIGN(v4.compress_rope_theta, RequiredNumber(r, "compress_rope_theta"));
    if (!(v4.compress_rope_theta > 0)) {
      return Invalid(
          absl::StrCat("\"compress_rope_theta\" must be positive, got ", v4.compress_rope_theta));
    }
  }
  if (any_csa) {  // only CSA layers have an indexer
    MOESERVE_ASSIGN(v4.index_n_heads, r.Int("index_n_heads"));
    MOESERVE_ASSIGN(v4.index_head_dim, r.Int("index_head_dim"));
    MOESERVE_ASSIGN(v4.index_topk, r.Int("index_topk"));
    for (auto [name, v] : {std::pair{"index_n_heads", v4.index_n_heads},
                           {"index_head_dim", v4.index_head_dim},
                           {"index_topk", v4.index_topk}}) {
      if (absl::Status s = RequirePositive(name, v); !s.ok()) return s;
    }
  }
  MOESERVE_ASSIGN(v4.hc_mult, r.Int("hc_mult"));
  MOESERVE_ASSIGN(v4.hc_sinkhorn_iters, r.Int("hc_sinkhorn_iters"));
  double hc_eps;
  MOESERVE_ASSIGN(hc_eps, r.Number("hc_eps", 1e-6));
  v4.hc_eps = static_cast<float>(hc_eps);
  for (auto [name, v] :
       {std::pair{"hc_mult", v4.hc_mult}, {"hc_sinkhorn_iters", v4.hc_sinkhorn_iters}}) {
    if (absl::Status s = RequirePositive(name, v); !s.ok()) return s;
  }
  if (!(v4.hc_eps > 0)) return Invalid(absl::StrCat("\"hc_eps\" must be positive, got ", hc_eps));
  MOESERVE_ASSIGN(v4.num_hash_layers, r.Int("num_hash_layers"));
  if (v4.num_hash_layers < 0 || v4.num_hash_layers > c.num_hidden_layers) {
    return Invalid(absl::StrCat("num_hash_layers (", v4.num_hash_layers,
                                ") must be in [0, num_hidden_layers = ", c.num_hidden_layers, "]"));
  }
  double limit;
  MOESERVE_ASSIGN(limit, RequiredNumber(r, "swiglu_limit"));
  if (!(limit >= 0)) {
    return Invalid(absl::StrCat("\"swiglu_limit\" must be >= 0 (0: no clamp), got ", limit));
  }
  v4.swiglu_limit = static_cast<float>(limit);
  return absl::OkStatus();
}

absl::Status ParseExpertDtype(const json& j, ModelConfig& c) {
  FieldReader r(j);
  std::string dtype;
  MOESERVE_ASSIGN(dtype, RequiredString(r, "expert_dtype", "\"fp4\" or \"fp8\""));
  if (dtype == "fp4") {
    c.v4.expert_dtype = ExpertDtype::kFp4;
  } else if (dtype == "fp8") {
    c.v4.expert_dtype = ExpertDtype::kFp8;
    return absl::OkStatus();
  } else {
    return Invalid(absl::StrCat("expert_dtype \"", dtype,
                                "\" is not supported; expected \"fp4\" or "
                                "\"fp8\""));
  }
  // FP4 experts pack two inputs a byte and scale every 32 inputs: both
  // input widths (hidden_size for w1/w3, moe_intermediate_size for w2) must
  // be whole scale blocks.
  for (auto [name, v] : {std::pair{"hidden_size", c.hidden_size},
                         {"moe_intermediate_size", c.moe_intermediate_size}}) {
    if (v % 32 != 0) {
      return Invalid(absl::StrCat(name, " (", v,
                                  ") is not a multiple of 32, the inputs an FP4 expert's "
                                  "scale covers (expert_dtype \"fp4\")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseDeepseekV4Config(const json& j, ModelConfig& c) {
  FieldReader r(j);
  c.arch = Architecture::kDeepseekV4;
  MOESERVE_ASSIGN(c.num_nextn_predict_layers, r.Int("num_nextn_predict_layers", 0));
  if (c.num_nextn_predict_layers < 0) {
    return Invalid(absl::StrCat("\"num_nextn_predict_layers\" must be >= 0, got ",
                                c.num_nextn_predict_layers));
  }
  if (c.tie_word_embeddings) {
    return Invalid(
        "tie_word_embeddings true is not supported for deepseek_v4: its checkpoints have their "
        "own head.weight");
  }
  if (absl::Status s = ParseAttention(j, c); !s.ok()) return s;
  if (absl::Status s = ParseRouting(j, c); !s.ok()) return s;
  if (absl::Status s = ParseV4Blocks(j, c); !s.ok()) return s;
  if (absl::Status s = ParseExpertDtype(j, c); !s.ok()) return s;
  return ParseQuantization(j);
}

}  // namespace moeserve
