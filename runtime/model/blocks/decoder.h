// What every decoder architecture here shares around its attention: the
// embedding, final norm and lm_head; each layer's two pre-norms and its
// feed-forward part (dense or MoE); and the residual stack that runs them.
// An architecture file supplies only its attention.
#ifndef MOESERVE_RUNTIME_MODEL_BLOCKS_DECODER_H_
#define MOESERVE_RUNTIME_MODEL_BLOCKS_DECODER_H_

#include <functional>
#include <memory>
#include <span>
#include <string>
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
// together. Rows [row_begin, row_begin + rows) of the batch; seqs' token_begin
// count from row_begin.
struct MicroBatch {
  int64_t row_begin = 0;
  int64_t rows = 0;
  std::vector<SeqSlice> seqs;
  std::span<const int32_t> positions;  // of the micro-batch's rows (backend memory)
};

// Splits the batch into `count` (1 or 2) micro-batches of whole sequences,
// the first holding the sequences up to half of the tokens. Always returns
// `count` of them; the second may be empty (a step of one sequence).
std::vector<MicroBatch> SplitMicroBatches(const ForwardBatch& batch,
                                          std::span<const int32_t> positions, int count);

// What an architecture's attention gets for one call: the op set of the
// step (queueing on the compute stream; an op set that does nothing while the
// workspace is planned), the step's workspace for its temporaries (take a
// mark and release it before returning), and 0, 1, 2, ... in backend memory
// (at least as many as the step's tokens), for gathers that keep rows in
// place.
struct StepContext {
  Ops& ops;
  Workspace& ws;
  std::span<const int32_t> iota;
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
  // `backend`, `io` and options.parallel.comm (when set) must outlive the
  // stack. Checks the placement against the config; an empty placement means
  // every MoE layer holds its experts contiguously across the group.
  absl::Status Init(const ModelConfig& config, Backend& backend, const ModelOptions& options);

  // The experts this rank loads in each layer.
  WeightSelection Selection() const;

  // attention(ctx, l, layers[l], seqs, positions, cache_layer, x, out) queues
  // layer l's attention over normalized input x of one micro-batch into out;
  // layers[l].common is a DecoderLayerCommon; positions are backend memory.
  // `cache` may be null only while planning. Fails only when the group's
  // collectives fail.
  template <typename Layer, typename Attention>
  absl::StatusOr<Tensor> Run(const EmbeddingAndHead& io, const std::vector<Layer>& layers,
                             const ForwardBatch& batch, PagedKvCache* cache, Attention&& attention);

  // Plans the step workspace by running the pass once over the largest batch
  // (options.max_batch_tokens) with an op set that does nothing, then
  // allocates it. Call once, after the weights are loaded.
  template <typename Layer, typename Attention>
  absl::Status Plan(const EmbeddingAndHead& io, const std::vector<Layer>& layers,
                    Attention&& attention);

  // InvalidArgument when the batch has more tokens than the workspace was
  // planned for.
  absl::Status CheckPlanned(const ForwardBatch& batch) const;

  const ForwardStats& stats() const { return stats_; }
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
  // (Re)creates the streams, their op set and the executor over them.
  void CreateStreams();

  const ModelConfig* config_ = nullptr;
  Backend* backend_ = nullptr;
  ParallelOptions options_;
  int64_t max_tokens_ = 0;               // per step; also each micro-batch's MoE capacity
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
  OverlapSchedule schedule_;
  std::unique_ptr<OverlapExecutor> executor_;
  ForwardStats stats_;
};

struct DecoderStack::Pass {
  const EmbeddingAndHead* io = nullptr;
  const ForwardBatch* batch = nullptr;
  PagedKvCache* cache = nullptr;
  bool planning = false;
  // Layer l's common parts, and its attention over one micro-batch.
  std::function<const DecoderLayerCommon&(int64_t l)> common;
  std::function<void(StepContext& ctx, int64_t l, const MicroBatch& mb, const PagedCacheView& cache,
                     ConstMatView x, MatView out)>
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
  pass.attention = [&layers, &attention](StepContext& ctx, int64_t l, const MicroBatch& mb,
                                         const PagedCacheView& cache_layer, ConstMatView x,
                                         MatView out) {
    attention(ctx, static_cast<size_t>(l), layers[static_cast<size_t>(l)],
              std::span<const SeqSlice>(mb.seqs), mb.positions, cache_layer, x, out);
  };
  return pass;
}

template <typename Layer, typename Attention>
absl::StatusOr<Tensor> DecoderStack::Run(const EmbeddingAndHead& io,
                                         const std::vector<Layer>& layers,
                                         const ForwardBatch& batch, PagedKvCache* cache,
                                         Attention&& attention) {
  Pass pass = MakePass(io, layers, batch, cache, attention);
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
