// DeepSeek-V4's hyperparameters beyond ModelConfig's common ones (V4-Flash,
// V4-Pro and their published config.json), parsed and validated by
// ParseModelConfig for model_type deepseek_v4.
//
// What each field does to the math (DeepSeek's V4 inference/model.py):
// every layer attends over a sliding window of the last `sliding_window`
// tokens with per-head attention sinks; a layer with compress ratio r > 0
// also attends over KV entries each compressing r tokens (CSA, r = 4:
// overlapping windows, an indexer picks `index_topk` entries; HCA, other r:
// all entries). RoPE covers the last qk_rope_head_dim dims of a head; YaRN
// and `compress_rope_theta` apply on compressed layers only. The residual
// stream is `hc_mult` streams mixed by Sinkhorn-normalised matrices (mHC).
// The output projection is grouped low-rank (`o_groups` x `o_lora_rank`).
// Routing is sqrt(softplus) with a bias, or by token id (`tid2eid`) in the
// first `num_hash_layers` layers; SwiGLU is clamped at `swiglu_limit`.
// The V4 model code will live in runtime/model/deepseek_v4.cc, its tensor
// names in runtime/model/deepseek_v4_weights.h.
#ifndef MOESERVE_RUNTIME_MODEL_DEEPSEEK_V4_CONFIG_H_
#define MOESERVE_RUNTIME_MODEL_DEEPSEEK_V4_CONFIG_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"

namespace moeserve {

struct ModelConfig;

// How the routed experts are stored (config.json "expert_dtype").
enum class ExpertDtype : uint8_t {
  kFp4,  // FP4 e2m1 two per byte (I8) with E8M0 scales per 32 inputs
  kFp8,  // FP8 e4m3 with 128x128 block scales, as the other linears
};

struct DeepseekV4Params {
  // One per layer, then one per MTP layer: 0 = sliding window only,
  // 4 = CSA, any other (>= 2) = HCA.
  std::vector<int64_t> compress_ratios;
  int64_t sliding_window = 0;        // tokens
  double compress_rope_theta = 0.0;  // RoPE base on compressed layers
  int64_t hc_mult = 0;               // residual streams
  int64_t hc_sinkhorn_iters = 0;
  float hc_eps = 1e-6f;
  int64_t index_n_heads = 0;  // the CSA indexer; 0 when no layer is CSA
  int64_t index_head_dim = 0;
  int64_t index_topk = 0;       // compressed entries an indexer selects
  int64_t num_hash_layers = 0;  // layers [0, n) route by token id
  int64_t o_groups = 0;
  int64_t o_lora_rank = 0;
  float swiglu_limit = 0.0f;  // routed and shared experts; 0 = no clamp
  ExpertDtype expert_dtype = ExpertDtype::kFp4;
  // scoring_func is validated to be "sqrtsoftplus", the only V4 routing
  // (ModelConfig::scoring_func does not apply to V4).

  // `layer` counts the MTP layers after the main ones:
  // [0, num_hidden_layers + num_nextn_predict_layers).
  int64_t compress_ratio(int64_t layer) const {
    return compress_ratios[static_cast<size_t>(layer)];
  }
  bool IsCsaLayer(int64_t layer) const { return compress_ratio(layer) == 4; }
  bool IsHashLayer(int64_t layer) const { return layer < num_hash_layers; }
  // A CSA compressor makes two overlapping entries' worth of values per
  // token: its projections and `ape` are twice the head width.
  int64_t compressor_overlap(int64_t layer) const { return IsCsaLayer(layer) ? 2 : 1; }
};

// Fills c.v4 and the common fields V4 shares with ModelConfig (heads,
// head_dim, q_lora_rank, rope, MoE sizes, MTP layers) from `j`, whose common
// fields ParseModelConfig has read. Errors name the field and the value.
absl::Status ParseDeepseekV4Config(const nlohmann::json& j, ModelConfig& c);

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_MODEL_DEEPSEEK_V4_CONFIG_H_
