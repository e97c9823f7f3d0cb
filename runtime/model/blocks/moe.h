// The Mixture-of-Experts block: router, routed experts, shared experts.
#ifndef MOESERVE_RUNTIME_MODEL_BLOCKS_MOE_H_
#define MOESERVE_RUNTIME_MODEL_BLOCKS_MOE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/model/blocks/ffn.h"
#include "runtime/model/config.h"
#include "runtime/model/model.h"

namespace moeserve {

struct MoeWeights {
  Tensor gate;                      // router [n_routed_experts, hidden]
  Tensor correction_bias;           // e_score_correction_bias [n_routed_experts], or empty
  std::vector<FfnWeights> experts;  // by expert id; unloaded experts are empty
  FfnWeights shared;                // n_shared_experts fused into one FFN, or empty
};

// Reads "<prefix>.gate.weight", the optional "<prefix>.gate.e_score_correction_bias",
// the selected "<prefix>.experts.<e>.*" and "<prefix>.shared_experts.*" when
// config.n_shared_experts > 0.
absl::StatusOr<MoeWeights> LoadMoe(Checkpoint& checkpoint, const std::string& prefix,
                                   const ModelConfig& config, const WeightSelection& selection);

// out = sum over each token's top-k experts of weight * expert(x) + shared(x),
// counting only the experts this rank holds. out: [x.rows, hidden].
void MoeForward(Ops& ops, const MoeWeights& weights, const ModelConfig& config, ConstMatView x,
                MatView out);

// A decoder layer's feed-forward part: the dense MLP or the MoE block, as the
// config says for that layer.
struct FeedForwardWeights {
  bool is_moe = false;
  FfnWeights dense;  // when !is_moe
  MoeWeights moe;    // when is_moe
};

// Reads "<prefix>.*" (prefix "model.layers.<layer>.mlp").
absl::StatusOr<FeedForwardWeights> LoadFeedForward(Checkpoint& checkpoint,
                                                   const std::string& prefix, int64_t layer,
                                                   const ModelConfig& config,
                                                   const WeightSelection& selection);

void FeedForward(Ops& ops, const FeedForwardWeights& weights, const ModelConfig& config,
                 ConstMatView x, MatView out);

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_MODEL_BLOCKS_MOE_H_
