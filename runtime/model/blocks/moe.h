// The Mixture-of-Experts block: router, routed experts, shared experts.
//
// The block runs in five stages so that the two all-to-all exchanges of
// expert parallelism can overlap other work (runtime/parallel/):
//   MoeRoute    router, top-k, a replica for every (token, expert) pair, and
//               the rows to send, grouped by destination rank;
//   MoeDispatch all-to-all of the rows to the ranks holding the experts;
//   MoeShared   the shared experts over the micro-batch's own tokens (needs
//               nothing from the exchange, so it can run while dispatch flies);
//   MoeExperts  the local experts over the rows received;
//   MoeCombine  all-to-all of the expert outputs back to where they came from;
//   MoeReduce   out = shared + sum over each token's experts of weight * output,
//               added in ascending expert order whatever the placement.
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
#include "runtime/parallel/communicator.h"
#include "runtime/parallel/expert_placement.h"

namespace moeserve {

struct MoeWeights {
  Tensor gate;                      // router [n_routed_experts, hidden]
  Tensor correction_bias;           // e_score_correction_bias [n_routed_experts], or empty
  std::vector<FfnWeights> experts;  // by logical expert id; only those this rank holds are loaded
  FfnWeights shared;                // n_shared_experts fused into one FFN, or empty
};

// Reads "<prefix>.gate.weight", the optional "<prefix>.gate.e_score_correction_bias",
// the selected "<prefix>.experts.<e>.*" of layer `layer` and
// "<prefix>.shared_experts.*" when config.n_shared_experts > 0.
absl::StatusOr<MoeWeights> LoadMoe(Checkpoint& checkpoint, const std::string& prefix, int64_t layer,
                                   const ModelConfig& config, const WeightSelection& selection);

// One micro-batch's way through one MoE layer. Filled by MoeRoute and read by
// the later stages; a rank with no tokens still goes through every stage.
struct MoeExchange {
  int64_t tokens = 0;
  std::vector<int32_t> experts;                   // [tokens * top_k] logical expert of each pair
  std::vector<float> gains;                       // [tokens * top_k] routing weight of each pair
  std::vector<int32_t> send_pair;                 // pair of each row sent, by destination
  std::vector<int64_t> send_rows, recv_rows;      // rows to / from each rank
  std::vector<int64_t> send_counts, recv_counts;  // the same in floats
  Tensor send;        // [pairs, hidden + 1]: x of the pair's token, then the local slot
  Tensor recv;        // [rows received, hidden + 1]
  Tensor expert_out;  // [rows received, hidden], in the order received
  Tensor combined;    // [pairs, hidden], in the order sent
  Tensor shared_out;  // [tokens, hidden]
};

// What a micro-batch's MoE stages need to know about the group.
struct MoeContext {
  const MoeWeights* weights = nullptr;
  const ModelConfig* config = nullptr;
  const LayerPlacement* placement = nullptr;
  int32_t rank = 0;
  // Tokens routed to each logical expert by this rank; MoeRoute adds to it.
  std::vector<int64_t>* expert_load = nullptr;
};

void MoeRoute(Ops& ops, const MoeContext& ctx, ConstMatView x, MoeExchange& ex);
// Fails when the all-to-all fails or a row names a slot outside [0, slots_per_rank).
absl::Status MoeDispatch(Communicator& comm, int32_t slots_per_rank, MoeExchange& ex);
void MoeShared(Ops& ops, const MoeContext& ctx, ConstMatView x, MoeExchange& ex);
void MoeExperts(Ops& ops, const MoeContext& ctx, MoeExchange& ex);
absl::Status MoeCombine(Communicator& comm, MoeExchange& ex);
void MoeReduce(Ops& ops, const MoeContext& ctx, MoeExchange& ex, MatView out);

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

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_MODEL_BLOCKS_MOE_H_
