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
#include "kernels/ops.h"
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
absl::StatusOr<EmbeddingAndHead> LoadEmbeddingAndHead(Checkpoint& checkpoint,
                                                      const ModelConfig& config);

// A layer's parts outside attention.
struct DecoderLayerCommon {
  Tensor attn_norm;  // input_layernorm
  Tensor ffn_norm;   // post_attention_layernorm
  FeedForwardWeights ffn;
};

// Reads model.layers.<layer>.{input_layernorm, post_attention_layernorm, mlp.*}.
absl::StatusOr<DecoderLayerCommon> LoadDecoderLayerCommon(Checkpoint& checkpoint, int64_t layer,
                                                          const ModelConfig& config,
                                                          const WeightSelection& selection);

// A contiguous run of a batch's sequences that goes through the layers
// together. Rows [row_begin, row_begin + rows) of the batch; seqs' token_begin
// count from row_begin.
struct MicroBatch {
  int64_t row_begin = 0;
  int64_t rows = 0;
  std::vector<SeqSlice> seqs;
  std::span<const int32_t> positions;  // of the micro-batch's rows
};

// Splits the batch into `count` (1 or 2) micro-batches of whole sequences,
// the first holding the sequences up to half of the tokens. Always returns
// `count` of them; the second may be empty (a step of one sequence).
std::vector<MicroBatch> SplitMicroBatches(const ForwardBatch& batch,
                                          std::span<const int32_t> positions, int count);

// Runs the residual stack of every decoder architecture here over a batch:
// embedding, then for each layer h += attention(norm(h)) and h += ffn(norm(h))
// with a dense MLP or an MoE block, then the logits of batch.logit_rows.
// The MoE blocks exchange tokens with the other ranks of the group, the
// stages scheduled by the overlap schedule (runtime/parallel/). Not thread
// safe; one per model.
class DecoderStack {
 public:
  // `ops`, `io` and options.comm (when set) must outlive the stack. Checks the
  // placement against the config; an empty placement means every MoE layer
  // holds its experts contiguously across the group.
  absl::Status Init(const ModelConfig& config, Ops& ops, const ParallelOptions& options);

  // The experts this rank loads in each layer.
  WeightSelection Selection() const;

  // attention(l, layers[l], seqs, positions, x, out) writes layer l's
  // attention output for normalized input x of one micro-batch; layers[l].common
  // is a DecoderLayerCommon. Fails only when the group's collectives fail.
  template <typename Layer, typename Attention>
  absl::StatusOr<Tensor> Run(const EmbeddingAndHead& io, const std::vector<Layer>& layers,
                             const ForwardBatch& batch, Attention&& attention);

  const ForwardStats& stats() const { return stats_; }

 private:
  // The parts of Run that do not depend on the layer type.
  struct Pass;
  absl::StatusOr<Tensor> RunPass(Pass& pass);

  const ModelConfig* config_ = nullptr;
  Ops* ops_ = nullptr;
  ParallelOptions options_;
  std::unique_ptr<Communicator> local_;  // when options_.comm is null
  Communicator* comm_ = nullptr;
  std::vector<bool> moe_layers_;
  OverlapSchedule schedule_;
  std::unique_ptr<OverlapExecutor> executor_;
  ForwardStats stats_;
};

struct DecoderStack::Pass {
  const EmbeddingAndHead* io;
  const ForwardBatch* batch;
  // Layer l's common parts, and its attention over one micro-batch.
  std::function<const DecoderLayerCommon&(int64_t l)> common;
  std::function<void(int64_t l, const MicroBatch& mb, ConstMatView x, MatView out)> attention;
};

template <typename Layer, typename Attention>
absl::StatusOr<Tensor> DecoderStack::Run(const EmbeddingAndHead& io,
                                         const std::vector<Layer>& layers,
                                         const ForwardBatch& batch, Attention&& attention) {
  Pass pass;
  pass.io = &io;
  pass.batch = &batch;
  pass.common = [&](int64_t l) -> const DecoderLayerCommon& {
    return layers[static_cast<size_t>(l)].common;
  };
  pass.attention = [&](int64_t l, const MicroBatch& mb, ConstMatView x, MatView out) {
    attention(static_cast<size_t>(l), layers[static_cast<size_t>(l)],
              std::span<const SeqSlice>(mb.seqs), mb.positions, x, out);
  };
  return RunPass(pass);
}
}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_MODEL_BLOCKS_DECODER_H_
