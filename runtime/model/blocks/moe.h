// The Mixture-of-Experts block: router, routed experts, shared experts.
//
// The block runs in stages so that the two all-to-all exchanges of
// expert parallelism can overlap other work (runtime/parallel/):
//   MoeRouter   router and top-k over the micro-batch;
//   MoePack     a replica for every (token, expert) pair of one exchange
//               round, and the rows to send, in fixed-capacity groups by
//               destination slot;
//   MoeDispatch all-to-all of the rows to the ranks holding the experts;
//   MoeShared   the shared experts over the micro-batch's own tokens (needs
//               nothing from the exchange, so it can run while dispatch flies);
//   MoeExperts  the local experts over the rows received;
//   MoeCombine  all-to-all of the expert outputs back to where they came from;
//   MoeReduce   out = shared + sum over each token's experts of weight * output,
//               added in ascending expert order whatever the placement.
// A micro-batch of more tokens than an exchange holds packs, exchanges,
// computes and reduces round after round (MoeExchangeRound).
#ifndef MOESERVE_RUNTIME_MODEL_BLOCKS_MOE_H_
#define MOESERVE_RUNTIME_MODEL_BLOCKS_MOE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/ops.h"
#include "kernels/workspace.h"
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
absl::StatusOr<MoeWeights> LoadMoe(const WeightReader& reader, const std::string& prefix,
                                   int64_t layer, const ModelConfig& config,
                                   const WeightSelection& selection);

// Where a layer's experts live, as the MoE ops read it: the placement's
// replica table in backend memory, uploaded once when the group is set up.
struct MoeLayerTable {
  Tensor replica_slots;                // I32 [num_experts * max_replicas]
  Tensor replica_counts;               // I32 [num_experts]
  MoeSlotTable table;                  // points into the two tensors above
  std::vector<int32_t> local_experts;  // the logical expert of each of `rank`'s slots
};
// Uploads `placement` on `stream` (and waits for it), for rank `rank`.
absl::StatusOr<MoeLayerTable> MakeMoeLayerTable(Backend& backend, Stream& stream,
                                                const LayerPlacement& placement, int32_t rank);

// One micro-batch's buffers for an MoE layer, carved from the step's
// workspace and reused by every MoE layer of the step (each stage of layer
// l + 1 that writes a buffer is ordered after the stages of layer l that
// read it, by stream order or an event of the overlap schedule). `capacity`
// is the most tokens of one rank that one exchange carries, the same on
// every rank for the step (ExchangeShapeFor): a slot never receives more rows
// than that from one rank, so the buffers never overflow and no count has to
// reach the host before the exchange. A micro-batch of more tokens exchanges
// them in rounds of `capacity` (MoeExchangeRound). Every array is backend
// memory; the host never reads them.
struct MoeExchange {
  int64_t tokens = 0;
  int64_t capacity = 0;
  MatView logits;                     // [tokens, num_experts] router logits
  std::span<int32_t> experts;         // [tokens * top_k] logical expert of each pair
  std::span<float> gains;             // [tokens * top_k] routing weight of each pair
  std::span<int32_t> pair_rows;       // [tokens * top_k] send row of each pair
  MatView send;                       // [slots * capacity, hidden], slots = ranks * slots_per_rank
  std::span<int32_t> send_counts;     // [slots]
  MatView recv;                       // [ranks * slots_per_rank * capacity, hidden]
  std::span<int32_t> recv_counts;     // [ranks * slots_per_rank]
  MatView expert_out;                 // like recv
  MatView combined;                   // like send
  std::span<int32_t> combine_counts;  // [slots]: what the combine brought back
  MatView shared_out;                 // [tokens, hidden]; no rows without shared experts
};
MoeExchange AllocateMoeExchange(Workspace& ws, const ModelConfig& config,
                                const LayerPlacement& placement, int64_t tokens, int64_t capacity);

// The part of `ex` a layer of `slots` physical slots uses (layers may differ
// in redundant slots; the buffers are sized for the largest).
MoeExchange MoeExchangeForSlots(const MoeExchange& ex, int64_t slots);

// Round `round` of `ex`: its tokens [round * capacity, + capacity) (fewer, or
// none, at the end of the micro-batch) and their pairs, with the whole of
// the exchange buffers. Round 0 of a one-round micro-batch is `ex` itself.
MoeExchange MoeExchangeRound(const MoeExchange& ex, int64_t round);

// What a micro-batch's MoE stages need to know about the group.
struct MoeContext {
  const MoeWeights* weights = nullptr;
  const ModelConfig* config = nullptr;
  const LayerPlacement* placement = nullptr;
  const MoeLayerTable* table = nullptr;
  int32_t rank = 0;
  // [num_experts] in backend memory: MoePack adds each expert's pairs.
  std::span<int64_t> expert_load;
  // Empty, or one count in backend memory: the micro-batch's tokens past it
  // (a batch-size bucket's padding) are not dispatched.
  std::span<const int32_t> tokens_in_use;
};

// Each stage queues ops on the stream `ops` feeds (compute stages) or an
// exchange on `stream` (communication stages); none waits for the device.
// Router logits and top-k over ex.tokens rows of x.
void MoeRouter(Ops& ops, const MoeContext& ctx, ConstMatView x, MoeExchange& ex);
// The send rows and counts of one round (x: that round's rows).
void MoePack(Ops& ops, const MoeContext& ctx, ConstMatView x, MoeExchange& ex);
// `host_accessible`: whether the host can read the buffers (Backend::host_accessible).
void QueueMoeDispatch(Communicator& comm, Stream& stream, const LayerPlacement& placement,
                      MoeExchange& ex, bool host_accessible);
void MoeShared(Ops& ops, const MoeContext& ctx, ConstMatView x, MoeExchange& ex);
void MoeExperts(Ops& ops, const MoeContext& ctx, MoeExchange& ex);
void QueueMoeCombine(Communicator& comm, Stream& stream, const LayerPlacement& placement,
                     MoeExchange& ex, bool host_accessible);
void MoeReduce(Ops& ops, const MoeContext& ctx, MoeExchange& ex, MatView out);

// A decoder layer's feed-forward part: the dense MLP or the MoE block, as the
// config says for that layer.
struct FeedForwardWeights {
  bool is_moe = false;
  FfnWeights dense;  // when !is_moe
  MoeWeights moe;    // when is_moe
};

// Reads "<prefix>.*" (prefix "model.layers.<layer>.mlp").
absl::StatusOr<FeedForwardWeights> LoadFeedForward(const WeightReader& reader,
                                                   const std::string& prefix, int64_t layer,
                                                   const ModelConfig& config,
                                                   const WeightSelection& selection);

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_MODEL_BLOCKS_MOE_H_
