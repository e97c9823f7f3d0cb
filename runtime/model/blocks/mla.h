// Multi-head latent attention (DeepSeek-V2/V3, Kimi K2).
#ifndef MOESERVE_RUNTIME_MODEL_BLOCKS_MLA_H_
#define MOESERVE_RUNTIME_MODEL_BLOCKS_MLA_H_

#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/model/blocks/decoder.h"
#include "runtime/model/config.h"
#include "runtime/model/model.h"

namespace moeserve {

struct MlaWeights {
  Tensor q_proj;     // [heads * qk_head_dim, hidden] when q_lora_rank is null
  Tensor q_a_proj;   // [q_lora_rank, hidden]
  Tensor q_a_norm;   // [q_lora_rank]
  Tensor q_b_proj;   // [heads * qk_head_dim, q_lora_rank]
  Tensor kv_a_proj;  // [kv_lora_rank + qk_rope_head_dim, hidden]
  Tensor kv_a_norm;  // [kv_lora_rank]
  Tensor kv_b_proj;  // [heads * (qk_nope_head_dim + v_head_dim), kv_lora_rank]
  Tensor o_proj;     // [hidden, heads * v_head_dim]
};

// Reads "<prefix>.{q_proj | q_a_proj, q_a_layernorm, q_b_proj}, kv_a_proj_with_mqa,
// kv_a_layernorm, kv_b_proj, o_proj}.weight".
absl::StatusOr<MlaWeights> LoadMla(const WeightReader& reader, const std::string& prefix,
                                   const ModelConfig& config);

// Attention for every token of the batch: projects x, writes the tokens'
// latent + rope key to `cache`, attends causally within each sequence, and
// writes the output projection to `out` [T, hidden].
void MlaForward(StepContext& step, const MlaWeights& weights, const ModelConfig& config,
                const RopeTable& rope, MlaForm form, const AttentionBatch& batch,
                const PagedCacheView& cache, ConstMatView x, MatView out);

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_MODEL_BLOCKS_MLA_H_
