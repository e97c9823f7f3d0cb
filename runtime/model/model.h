// A loaded model: its weights and a forward pass over a ragged batch.
//
// Each architecture lives in one file (deepseek_v3.cc, qwen3_moe.cc) built
// from the shared blocks in blocks/, and calls numerics only through Ops.
#ifndef MOESERVE_RUNTIME_MODEL_MODEL_H_
#define MOESERVE_RUNTIME_MODEL_MODEL_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/ops.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/kv_cache/paged_kv_cache.h"
#include "runtime/model/config.h"
#include "runtime/parallel/communicator.h"
#include "runtime/parallel/expert_placement.h"
#include "runtime/parallel/overlap_schedule.h"

namespace moeserve {

// Which weights a rank loads; nothing else is read from the checkpoint.
struct WeightSelection {
  // Routed experts to load in every MoE layer; empty means all. Experts not
  // loaded contribute nothing to the MoE block's output.
  std::vector<int32_t> experts;
  // Per layer, when set for that layer (a rank of an expert-parallel group
  // loads the experts its placement gives it); overrides `experts`.
  std::vector<std::vector<int32_t>> layer_experts;

  bool WantsExpert(int64_t layer, int32_t expert) const;
};

// How a model takes part in an expert-parallel group (runtime/parallel/).
struct ParallelOptions {
  // The group; null for a single process.
  Communicator* comm = nullptr;
  // Where each MoE layer's experts live; empty: contiguously over the group.
  ExpertPlacement placement;
  // Each step's sequences go through the layers as 1 or 2 micro-batches.
  int micro_batches = 1;
  // With 2 micro-batches: run the all-to-all on a communication thread while
  // the other micro-batch computes. Both settings give the same results.
  bool overlap = false;
};

// The exchange of one step: how many tokens of one rank an exchange carries
// and in how many rounds each MoE layer exchanges a micro-batch. Every rank
// of a group must use the same shape for a step, so it is derived from what
// all of them know: `group_tokens`, the most tokens any rank runs in the
// step, and `max_exchange_tokens` (ModelOptions). capacity is the smallest
// power of two >= group_tokens, at most max_exchange_tokens; rounds =
// ceil(group_tokens / capacity), at least 1.
struct ExchangeShape {
  int64_t capacity = 1;
  int64_t rounds = 1;
};
ExchangeShape ExchangeShapeFor(int64_t group_tokens, int64_t max_exchange_tokens);

// What the last forward pass did, for placement and metrics.
struct ForwardStats {
  // [layer][logical expert]: (token, expert) pairs this rank routed; empty
  // for dense layers.
  std::vector<std::vector<int64_t>> expert_load;
  CommunicationTiming communication;
  // The batch-size bucket a decode step ran in (ModelOptions::graphs), 0 for
  // an unpadded eager step. A bucket's first step runs its padded pass
  // eagerly (sizing the op set's buffers), its second captures the graph,
  // and every later one replays it.
  int64_t graph_batch_size = 0;
  // How the MoE layers exchanged the step's tokens: capacity (tokens of one
  // rank per exchange) and rounds per micro-batch.
  ExchangeShape exchange;
};

// How MLA attention is computed. Both forms give the same function; kAuto
// picks, per sequence, the one with fewer floating-point operations (the
// prefill form for long chunks, the absorbed form for decode).
enum class MlaForm { kAuto, kPrefill, kAbsorbed };

struct ModelOptions {
  MlaForm mla_form = MlaForm::kAuto;
  ParallelOptions parallel;
  // The most tokens one Forward takes. The step workspace is planned for it
  // at load time.
  int64_t max_batch_tokens = 2048;
  // The most tokens of one rank that one expert-parallel exchange carries,
  // the same on every rank. It sizes the exchange buffers: per micro-batch,
  // 4 x slots x min(this, max_batch_tokens rounded up to a power of two) x
  // hidden floats (slots = experts plus redundant replicas, over the whole
  // group). A step runs its MoE layers with the smallest power of two that
  // holds the most tokens any rank has in it (its capacity), so small
  // decode steps exchange and compute small buffers; a step where some rank
  // has more tokens than this exchanges them in several rounds, without
  // the two-micro-batch overlap. DeepEP's low-latency kernels use 128.
  int64_t max_exchange_tokens = 256;
  // Decode steps (one new token per sequence) as graphs captured once per
  // batch-size bucket and replayed (CUDA graphs on a GPU; the CPU backend's
  // replay on the CPU): a step of n sequences runs the graph of the smallest
  // bucket >= n with the rest padded. Steps that fit no bucket, and steps
  // with the two-micro-batch overlap, run eagerly. The replayed step
  // computes the same function as the eager one.
  bool graphs = false;
  std::vector<int64_t> graph_batch_sizes = {1, 2, 4, 8, 16, 32, 64, 128, 256};
};

// One forward pass. Sequences are laid out one after another: seqs[i] covers
// rows [token_begin, token_begin + num_tokens) of `tokens`. Block tables must
// already hold a block for every position below each context_len.
struct ForwardBatch {
  std::vector<int32_t> tokens;
  std::vector<SeqSlice> seqs;
  // Rows of `tokens` whose next-token logits are wanted, ascending or not.
  std::vector<int64_t> logit_rows;
  // In an expert-parallel group: the most tokens any rank runs in this step
  // (the same value on every rank; at least tokens.size(), at most
  // max_batch_tokens). It sizes the step's exchanges. 0: not known, and
  // every rank assumes max_batch_tokens. Ignored by a single process.
  int64_t group_max_tokens = 0;
};

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;

  // Runs every layer, writes the new tokens' keys into `cache` and returns
  // logits [logit_rows.size(), vocab_size] (float32, host memory). Fails,
  // without touching the cache, on token ids outside the vocabulary,
  // malformed slices or more tokens than options.max_batch_tokens.
  // In an expert-parallel group every rank must call Forward for every step,
  // with an empty batch if it has no sequences; a failed collective fails it
  // with UNAVAILABLE.
  virtual absl::StatusOr<Tensor> Forward(const ForwardBatch& batch, PagedKvCache& cache) = 0;

  // Of the last Forward.
  virtual const ForwardStats& last_forward_stats() const = 0;
};

// Reads config.json of `checkpoint`, the weights in `selection`, and returns
// the model, running on `backend` (which must outlive it): its own compute
// and communication streams, op set and step workspace. With
// options.parallel.comm set, the selection must be empty: the rank's
// placement decides its experts.
absl::StatusOr<std::unique_ptr<Model>> LoadModel(Checkpoint& checkpoint,
                                                 const WeightSelection& selection, Backend& backend,
                                                 const ModelOptions& options = {});

// Whether moeserve can build a model for `config` from `checkpoint`, known
// before any weight is loaded, so that a worker refuses at start-up. OK for
// the architectures with a forward pass. For deepseek_v4 the checkpoint is
// checked against its config (CheckDeepseekV4Checkpoint: headers and hash
// tables) and the answer is UNIMPLEMENTED saying that it was read and that
// the V4 forward pass is not there yet; a damaged V4 checkpoint gives its
// precise error instead. LoadModel answers the same.
absl::Status CheckServable(Checkpoint& checkpoint, const ModelConfig& config);

// Positions of the batch's tokens, derived from the slices.
std::vector<int32_t> TokenPositions(const ForwardBatch& batch);

// Checks what Forward needs of a batch: ids inside the vocabulary, slices
// tiling the tokens in order, block tables long enough for the cache.
absl::Status ValidateBatch(const ForwardBatch& batch, const ModelConfig& config,
                           const PagedKvCache& cache);

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_MODEL_MODEL_H_
