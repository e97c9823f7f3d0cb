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

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_MODEL_BLOCKS_MOE_H_
