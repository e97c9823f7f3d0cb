// Grouped-query attention with per-head q/k RMSNorm (Qwen3).
#ifndef MOESERVE_RUNTIME_MODEL_BLOCKS_GQA_H_
#define MOESERVE_RUNTIME_MODEL_BLOCKS_GQA_H_

#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/model/blocks/decoder.h"
#include "runtime/model/config.h"

namespace moeserve {

struct GqaWeights {
  Tensor q_proj;  // [heads * head_dim, hidden]
  Tensor k_proj;  // [kv_heads * head_dim, hidden]
  Tensor v_proj;  // [kv_heads * head_dim, hidden]
  Tensor o_proj;  // [hidden, heads * head_dim]
  Tensor q_norm;  // [head_dim], or empty
  Tensor k_norm;  // [head_dim], or empty
};

// Reads "<prefix>.{q,k,v,o}_proj.weight" and, when present, "<prefix>.{q,k}_norm.weight".
absl::StatusOr<GqaWeights> LoadGqa(const WeightReader& reader, const std::string& prefix,
                                   const ModelConfig& config, bool qk_norm);

// Projects x, normalizes and rotates q and k per head, writes K and V to the
// cache, attends causally and writes the output projection to `out`.
void GqaForward(StepContext& step, const GqaWeights& weights, const ModelConfig& config,
                const RopeTable& rope, const AttentionBatch& batch, const PagedCacheView& cache,
                ConstMatView x, MatView out);

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_MODEL_BLOCKS_GQA_H_
