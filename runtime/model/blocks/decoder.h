// What every decoder architecture here shares around its attention: the
// embedding, final norm and lm_head; each layer's two pre-norms and its
// feed-forward part (dense or MoE); and the residual stack that runs them.
// An architecture file supplies only its attention.
#ifndef MOESERVE_RUNTIME_MODEL_BLOCKS_DECODER_H_
#define MOESERVE_RUNTIME_MODEL_BLOCKS_DECODER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/model/architectures.h"
#include "runtime/model/blocks/moe.h"
#include "runtime/model/config.h"
#include "runtime/model/model.h"

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

// Embeds the batch, runs h += attention(norm(h)), h += ffn(norm(h)) for every
// layer, and returns the logits of batch.logit_rows. `layers[l].common` is a
// DecoderLayerCommon; attention(l, layers[l], x, out) writes layer l's
// attention output for normalized input x.
template <typename Layer, typename Attention>
Tensor RunDecoderStack(Ops& ops, const ModelConfig& c, const EmbeddingAndHead& io,
                       const std::vector<Layer>& layers, const ForwardBatch& batch,
                       Attention&& attention) {
  const auto tokens = static_cast<int64_t>(batch.tokens.size());
  Tensor h = Tensor::Empty(DType::kF32, {tokens, c.hidden_size});
  Tensor normed = Tensor::Empty(DType::kF32, {tokens, c.hidden_size});
  Tensor delta = Tensor::Empty(DType::kF32, {tokens, c.hidden_size});
  ops.Embedding(io.embed, batch.tokens, h.mat());
  for (size_t l = 0; l < layers.size(); ++l) {
    const DecoderLayerCommon& common = layers[l].common;
    ops.RmsNorm(h.mat(), common.attn_norm, c.rms_norm_eps, normed.mat());
    attention(l, layers[l], ConstMatView(normed.mat()), delta.mat());
    ops.Add(delta.mat(), h.mat());
    ops.RmsNorm(h.mat(), common.ffn_norm, c.rms_norm_eps, normed.mat());
    FeedForward(ops, common.ffn, c, normed.mat(), delta.mat());
    ops.Add(delta.mat(), h.mat());
  }
  return ComputeLogits(ops, h.mat(), io.final_norm, io.lm_head, batch.logit_rows, c.rms_norm_eps);
}

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_MODEL_BLOCKS_DECODER_H_
