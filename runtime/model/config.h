// Model hyperparameters parsed from a Hugging Face config.json, validated
// once, then passed down as a plain struct.
#ifndef MOESERVE_RUNTIME_MODEL_CONFIG_H_
#define MOESERVE_RUNTIME_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "nlohmann/json.hpp"
#include "runtime/model/deepseek_v4_config.h"

namespace moeserve {

enum class Architecture {
  kDeepseekV3,  // model_type deepseek_v3 and kimi_k2: MLA + group-limited sigmoid MoE
  kQwen3Moe,    // model_type qwen3_moe: GQA with q/k RMSNorm + softmax MoE
  // model_type deepseek_v4: sliding-window + compressed attention, mHC,
  // sqrt-softplus and hash routing (ModelConfig::v4). Its checkpoint and
  // config are read and checked; its forward pass is not implemented yet, so
  // no Model is built for it (CheckServable says so).
  kDeepseekV4,
};

struct ModelConfig {
  std::string model_type;  // as written in config.json
  Architecture arch = Architecture::kDeepseekV3;

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t intermediate_size = 0;  // dense MLP layers (deepseek_v4 has none: 0)
  float rms_norm_eps = 1e-6f;
  int64_t max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;

  // Attention.
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // GQA (qwen3_moe); 1 for deepseek_v4
  int64_t head_dim = 0;             // GQA (qwen3_moe) and deepseek_v4 (nope + rope)
  int64_t q_lora_rank = 0;          // MLA; 0 when config says null (q_proj instead of q_a/q_b)
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  RopeParams rope;

  // MoE.
  int64_t n_routed_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t moe_intermediate_size = 0;
  int64_t n_shared_experts = 0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  float routed_scaling_factor = 1.0f;
  bool norm_topk_prob = false;
  ScoringFunc scoring_func = ScoringFunc::kSoftmax;
  int64_t first_k_dense_replace = 0;     // deepseek_v3: layers below are dense
  int64_t decoder_sparse_step = 1;       // qwen3_moe
  std::vector<int64_t> mlp_only_layers;  // qwen3_moe: always dense
  int64_t num_nextn_predict_layers = 0;  // deepseek_v3/v4 MTP layers (skipped)

  // model_type deepseek_v4 only.
  DeepseekV4Params v4;

  // Derived.
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // Floats per token and layer in the KV cache: the 576-wide latent + rope
  // key for MLA (kv_lora_rank + qk_rope_head_dim), K and V for GQA. Not
  // defined for deepseek_v4, whose cache differs per layer type (issue 16):
  // no V4 model or cache is made (CheckServable refuses it first).
  int64_t kv_cache_width() const;
  // The cache row of kv_cache_width() values in `dtype`: MLA quantizes the
  // latent and keeps the rope key bf16 in FP8, GQA quantizes per KV head
  // (kernels/kv_cache_layout.h).
  KvRowLayout kv_cache_row(KvCacheDtype dtype) const;
  bool IsMoeLayer(int64_t layer) const;
  // Attention softmax scale including YaRN's mscale correction.
  float softmax_scale() const;
  bool IsEos(int32_t token) const;
};

// Parses and validates. Unknown model_type, missing or inconsistent fields
// fail with a message naming the field and its value.
absl::StatusOr<ModelConfig> ParseModelConfig(const nlohmann::json& json);

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_MODEL_CONFIG_H_
