#include "runtime/model/blocks/decoder.h"

#include "absl/strings/str_cat.h"

namespace moeserve {

absl::StatusOr<EmbeddingAndHead> LoadEmbeddingAndHead(Checkpoint& checkpoint,
                                                      const ModelConfig& c) {
  EmbeddingAndHead io;
  absl::Status s =
      ReadWeight(checkpoint, "model.embed_tokens.weight", {c.vocab_size, c.hidden_size}, &io.embed);
  if (s.ok()) s = ReadWeight(checkpoint, "model.norm.weight", {c.hidden_size}, &io.final_norm);
  if (s.ok()) {
    if (c.tie_word_embeddings) {
      io.lm_head = io.embed;
    } else {
      s = ReadWeight(checkpoint, "lm_head.weight", {c.vocab_size, c.hidden_size}, &io.lm_head);
    }
  }
  if (!s.ok()) return s;
  return io;
}

absl::StatusOr<DecoderLayerCommon> LoadDecoderLayerCommon(Checkpoint& checkpoint, int64_t layer,
                                                          const ModelConfig& c,
                                                          const WeightSelection& selection) {
  DecoderLayerCommon common;
  const std::string prefix = absl::StrCat("model.layers.", layer);
  absl::Status s = ReadWeight(checkpoint, prefix + ".input_layernorm.weight", {c.hidden_size},
                              &common.attn_norm);
  if (s.ok()) {
    s = ReadWeight(checkpoint, prefix + ".post_attention_layernorm.weight", {c.hidden_size},
                   &common.ffn_norm);
  }
  if (!s.ok()) return s;
  auto ffn = LoadFeedForward(checkpoint, prefix + ".mlp", layer, c, selection);
  if (!ffn.ok()) return ffn.status();
  common.ffn = *std::move(ffn);
  return common;
}

}  // namespace moeserve
