// What every decoder architecture here shares around its attention: the
// embedding, final norm and lm_head; each layer's two pre-norms and its
// feed-forward part (dense or MoE); and the residual stack that runs them.
// An architecture file supplies only its attention.
#ifndef MOESERVE_RUNTIME_MODEL_BLOCKS_DECODER_H_
#define MOESERVE_RUNTIME_MODEL_BLOCKS_DECODER_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/ops.h"
#include "kernels/stream.h"
#include "kernels/workspace.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/model/architectures.h"
#include "runtime/model/blocks/moe.h"
#include "runtime/model/config.h"
#include "runtime/model/model.h"
#include "runtime/parallel/communicator.h"
#include "runtime/parallel/overlap_schedule.h"

namespace moeserve {

struct EmbeddingAndHead {
  Tensor embed;       // [vocab, hidden]
  Tensor final_norm;  // [hidden]
  Tensor lm_head;     // [vocab, hidden]; shares embed's buffer when tied
};

// Reads model.embed_tokens, model.norm and lm_head (or ties it).
absl::StatusOr<EmbeddingAndHead> LoadEmbeddingAndHead(const WeightReader& reader,
                                                      const ModelConfig& config);

// A layer's parts outside attention.
struct DecoderLayerCommon {
  Tensor attn_norm;  // input_layernorm
  Tensor ffn_norm;   // post_attention_layernorm
  FeedForwardWeights ffn;
};

// Reads model.layers.<layer>.{input_layernorm, post_attention_layernorm, mlp.*}.
absl::StatusOr<DecoderLayerCommon> LoadDecoderLayerCommon(const WeightReader& reader, int64_t layer,
                                                          const ModelConfig& config,
                                                          const WeightSelection& selection);

// A contiguous run of a batch's sequences that goes through the layers
// together. Rows [row_begin, row_begin + rows) of the batch; seqs'
// token_begin count from row_begin.
struct MicroBatch {
  int64_t row_begin = 0;
  int64_t rows = 0;
  std::vector<SeqSlice> seqs;
};

// What an architecture's attention reads about one micro-batch's sequences.
// `table` and `positions` are backend memory, read when the ops run. `host`
// holds the same sequences for decisions made when the work is queued (which
// MLA form); it is empty when the step is captured for replay, where nothing
// queued may depend on one step's sequences.
struct AttentionBatch {
  SeqTable table;
  std::span<const int32_t> positions;  // of the micro-batch's rows
  std::span<const SeqSlice> host;
};

// Splits the batch into `count` (1 or 2) micro-batches of whole sequences,
// the first holding the sequences up to half of the tokens. Always returns
// `count` of them; the second may be empty (a step of one sequence).
std::vector<MicroBatch> SplitMicroBatches(const ForwardBatch& batch, int count);

// What an architecture's attention gets for one call: the op set of the
// step (queueing on the compute stream; an op set that does nothing while the
// workspace is planned), the step's workspace for its temporaries (take a
// mark and release it before returning), 0, 1, 2, ... in backend memory (at
// least as many as the step's tokens), for gathers that keep rows in place,
// and `upload`, which copies host integers into step memory (the same
// contents give the same memory; not available, an empty function, while a
// step is captured for replay or planned).
struct StepContext {
  Ops& ops;
  Workspace& ws;
  std::span<const int32_t> iota;
  std::function<std::span<const int32_t>(const std::vector<int32_t>&)> upload;
};

// Runs the residual stack of every decoder architecture here over a batch:
// embedding, then for each layer h += attention(norm(h)) and h += ffn(norm(h))
// with a dense MLP or an MoE block, then the logits of batch.logit_rows.
//
// Execution: the stack owns the model's compute and communication streams,
// its op set and its step workspace (kernels/workspace.h), planned once for
// the largest batch it accepts. A pass queues every op and exchange on the
// streams, with the overlap schedule's events between them
// (runtime/parallel/), copies the logits and expert loads to the host at the
// end and synchronizes once: the host reads nothing of the device in between.
// Not thread safe; one per model.
class DecoderStack {
 public:
  DecoderStack();
  ~DecoderStack();
  // A step's inputs in backend memory, and a decode bucket's graph
  // (internal to decoder.cc).
  struct Inputs;
  struct GraphBucket;

  // `backend`, `io` and options.parallel.comm (when set) must outlive the
  // stack. Checks the placement against the config; an empty placement means
  // every MoE layer holds its experts contiguously across the group.
  absl::Status Init(const ModelConfig& config, Backend& backend, const ModelOptions& options);

  // The experts this rank loads in each layer.
  WeightSelection Selection() const;

  // attention(ctx, l, layers[l], batch, cache_layer, x, out) queues layer
  // l's attention over normalized input x of one micro-batch (an
  // AttentionBatch) into out; layers[l].common is a DecoderLayerCommon.
  // `cache` may be null only while planning. Decode steps (one new token per
  // sequence, every row's logits) run as a captured graph per batch-size
  // bucket when options.graphs is on and `replayable` (the architecture's
  // attention can run from the device tables alone). Fails only when the
  // group's collectives fail.
  template <typename Layer, typename Attention>
  absl::StatusOr<Tensor> Run(const EmbeddingAndHead& io, const std::vector<Layer>& layers,
                             const ForwardBatch& batch, PagedKvCache* cache, Attention&& attention,
                             bool replayable = true);

  // Plans the step workspace by running the pass once over the largest batch
  // (options.max_batch_tokens) with an op set that does nothing, then
  // allocates it. Call once, after the weights are loaded.
  template <typename Layer, typename Attention>
  absl::Status Plan(const EmbeddingAndHead& io, const std::vector<Layer>& layers,
                    Attention&& attention);

  // InvalidArgument when the batch has more tokens (or sequences) than the
  // workspace was planned for.
  absl::Status CheckPlanned(const ForwardBatch& batch) const;

  const ForwardStats& stats() const { return stats_; }
  // Steps run by replaying a captured graph, and graphs captured, so far.
  int64_t graph_replays() const { return graph_replays_; }
  int64_t graphs_captured() const { return static_cast<int64_t>(graphs_.size()); }
  // Why decode graphs were turned off after being asked for; empty if not.
  const std::string& graphs_off_reason() const { return graphs_off_reason_; }
  // The step workspace's size, once planned.
  size_t workspace_bytes() const { return workspace_ ? workspace_->capacity_bytes() : 0; }
  Backend& backend() { return *backend_; }

 private:
  struct Pass;
  // The pass over `batch` with each layer's common parts and attention.
  template <typename Layer, typename Attention>
  static Pass MakePass(const EmbeddingAndHead& io, const std::vector<Layer>& layers,
                       const ForwardBatch& batch, PagedKvCache* cache, Attention& attention);
  absl::StatusOr<Tensor> RunPass(Pass& pass);
  // The pass of a decode step of `batch` through the graph of its bucket,
  // capturing it first if need be; nullopt when the step does not fit one.
  std::optional<absl::StatusOr<Tensor>> RunGraph(Pass& pass);
  // Queues the layers and the logits of rows [0, logit rows) of a pass whose
  // inputs (ids, positions, sequence tables) are in backend memory; logits go
  // to `logits` (backend memory, [rows, vocab]) or, with `host_logits`, are
  // copied there chunk by chunk.
  void QueuePass(Pass& pass, Workspace& ws, Ops& ops, Inputs& in, MatView logits,
                 float* host_logits);
  // Copies the expert loads out, waits for the streams and gathers the
  // step's statistics.
  absl::Status FinishPass(const Inputs& in, double exchanged_before);
  // (Re)creates the streams and their op set; executors come with Executor().
  void CreateStreams();
  // The schedule of a step of `rounds` exchange rounds (more than one: no
  // overlap), and its executor on the current streams.
  OverlapSchedule ScheduleFor(int64_t rounds) const;
  OverlapExecutor& Executor(int64_t rounds);
  // The exchange shape of a step whose largest rank runs `tokens` tokens, or
  // of `batch` (its group_max_tokens, or in a group that does not say, the
  // planned maximum, which every rank knows). `rows`: this rank's rows.
  ExchangeShape StepExchange(const ForwardBatch& batch, int64_t rows) const;
  // The arena of the step inputs, sized for caches of `block_size`.
  absl::Status EnsureInputs(int64_t block_size);
  int64_t max_blocks(int64_t block_size) const;

  const ModelConfig* config_ = nullptr;
  Backend* backend_ = nullptr;
  ParallelOptions options_;
  int64_t max_tokens_ = 0;               // per step
  int64_t max_exchange_tokens_ = 0;      // ModelOptions::max_exchange_tokens
  std::unique_ptr<Communicator> local_;  // when options_.comm is null
  Communicator* comm_ = nullptr;
  std::vector<bool> moe_layers_;
  int64_t max_slots_ = 0;  // physical slots of the largest MoE layer
  std::unique_ptr<Stream> compute_, comm_stream_;
  std::unique_ptr<Ops> ops_;       // on compute_
  std::unique_ptr<Ops> null_ops_;  // for planning
  std::unique_ptr<Workspace> workspace_;
  Tensor iota_;                        // I32 [max_tokens_]: 0, 1, ...
  std::vector<MoeLayerTable> tables_;  // by layer; empty for dense layers
  OverlapSchedule schedule_;           // of a step with one exchange round
  // By exchange rounds: the executor of that schedule (created when first needed).
  std::map<int64_t, std::unique_ptr<OverlapExecutor>> executors_;
  ForwardStats stats_;
  // Step inputs (ids, positions, sequence tables) of eager steps.
  std::unique_ptr<Workspace> inputs_;
  int64_t inputs_block_size_ = 0;
  // Decode graphs by bucket size and exchange capacity.
  bool graphs_on_ = false;
  std::vector<int64_t> buckets_;
  std::map<std::pair<int64_t, int64_t>, std::unique_ptr<GraphBucket>> graphs_;
  const PagedKvCache* graph_cache_ = nullptr;  // the cache graphs_ were captured with
  int64_t graph_replays_ = 0;
  std::string graphs_off_reason_;
};

struct DecoderStack::Pass {
  const EmbeddingAndHead* io = nullptr;
  const ForwardBatch* batch = nullptr;
  PagedKvCache* cache = nullptr;
  bool planning = false;
  bool replayable = false;
  // Layer l's common parts, and its attention over one micro-batch.
  std::function<const DecoderLayerCommon&(int64_t l)> common;
  std::function<void(StepContext& ctx, int64_t l, const AttentionBatch& batch,
                     const PagedCacheView& cache, ConstMatView x, MatView out)>
      attention;
};

template <typename Layer, typename Attention>
DecoderStack::Pass DecoderStack::MakePass(const EmbeddingAndHead& io,
                                          const std::vector<Layer>& layers,
                                          const ForwardBatch& batch, PagedKvCache* cache,
                                          Attention& attention) {
  Pass pass;
  pass.io = &io;
  pass.batch = &batch;
  pass.cache = cache;
  pass.common = [&layers](int64_t l) -> const DecoderLayerCommon& {
    return layers[static_cast<size_t>(l)].common;
  };
  pass.attention = [&layers, &attention](StepContext& ctx, int64_t l, const AttentionBatch& b,
                                         const PagedCacheView& cache_layer, ConstMatView x,
                                         MatView out) {
    attention(ctx, static_cast<size_t>(l), layers[static_cast<size_t>(l)], b, cache_layer, x, out);
  };
  return pass;
}

template <typename Layer, typename Attention>
absl::StatusOr<Tensor> DecoderStack::Run(const EmbeddingAndHead& io,
                                         const std::vector<Layer>& layers,
                                         const ForwardBatch& batch, PagedKvCache* cache,
                                         Attention&& attention, bool replayable) {
  Pass pass = MakePass(io, layers, batch, cache, attention);
  pass.replayable = replayable;
  if (std::optional<absl::StatusOr<Tensor>> replayed = RunGraph(pass)) return *std::move(replayed);
  return RunPass(pass);
}

template <typename Layer, typename Attention>
absl::Status DecoderStack::Plan(const EmbeddingAndHead& io, const std::vector<Layer>& layers,
                                Attention&& attention) {
  // One sequence of the largest step, all of it new, one row's logits (the
  // logits are computed in chunks of a fixed size whatever their number).
  ForwardBatch batch;
  batch.tokens.assign(static_cast<size_t>(max_tokens_), 0);
  SeqSlice seq;
  seq.num_tokens = max_tokens_;
  seq.context_len = max_tokens_;
  batch.seqs.push_back(seq);
  batch.logit_rows.push_back(0);
  Pass pass = MakePass(io, layers, batch, nullptr, attention);
  pass.planning = true;
  return RunPass(pass).status();
}

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_MODEL_BLOCKS_DECODER_H_
