// DeepSeek-V3 / R1 / V3.1 and Kimi K2: multi-head latent attention, the first
// `first_k_dense_replace` layers dense, the rest Mixture-of-Experts with
// group-limited sigmoid routing and shared experts. The MTP module (layer
// index num_hidden_layers) is present in the files and not loaded.
//
// Follows deepseek-ai/DeepSeek-V3 inference/model.py.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/model/architectures.h"
#include "runtime/model/blocks/mla.h"
#include "runtime/model/blocks/moe.h"

namespace moeserve {
namespace {

class DeepseekV3 final : public Model {
 public:
  DeepseekV3(const ModelConfig& config, Ops& ops, const ModelOptions& options)
      : config_(config),
        ops_(ops),
        options_(options),
        rope_(MakeRopeTable(config.rope, RopeStyle::kInterleaved)) {}

  absl::Status Load(Checkpoint& checkpoint, const WeightSelection& selection) {
    const ModelConfig& c = config_;
    absl::Status s =
        ReadWeight(checkpoint, "model.embed_tokens.weight", {c.vocab_size, c.hidden_size}, &embed_);
    if (s.ok()) s = ReadWeight(checkpoint, "model.norm.weight", {c.hidden_size}, &final_norm_);
    if (s.ok()) {
      if (c.tie_word_embeddings) {
        lm_head_ = embed_;  // shares the buffer
      } else {
        s = ReadWeight(checkpoint, "lm_head.weight", {c.vocab_size, c.hidden_size}, &lm_head_);
      }
    }
    if (!s.ok()) return s;
    layers_.resize(static_cast<size_t>(c.num_hidden_layers));
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      s = LoadLayer(checkpoint, selection, l, layers_[static_cast<size_t>(l)]);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }

  const ModelConfig& config() const override { return config_; }

  absl::StatusOr<Tensor> Forward(const ForwardBatch& batch, PagedKvCache& cache) override {
    if (absl::Status s = ValidateBatch(batch, config_, cache); !s.ok()) return s;
    const auto tokens = static_cast<int64_t>(batch.tokens.size());
    const std::vector<int32_t> positions = TokenPositions(batch);
    Tensor h = Tensor::Empty(DType::kF32, {tokens, config_.hidden_size});
    Tensor normed = Tensor::Empty(DType::kF32, {tokens, config_.hidden_size});
    Tensor delta = Tensor::Empty(DType::kF32, {tokens, config_.hidden_size});
    ops_.Embedding(embed_, batch.tokens, h.mat());
    for (size_t l = 0; l < layers_.size(); ++l) {
      const Layer& layer = layers_[l];
      ops_.RmsNorm(h.mat(), layer.attn_norm, config_.rms_norm_eps, normed.mat());
      MlaForward(ops_, layer.attn, config_, rope_, options_.mla_form, batch.seqs, positions,
                 cache.layer(static_cast<int64_t>(l)), normed.mat(), delta.mat());
      ops_.Add(delta.mat(), h.mat());
      ops_.RmsNorm(h.mat(), layer.ffn_norm, config_.rms_norm_eps, normed.mat());
      FeedForward(ops_, layer.ffn, config_, normed.mat(), delta.mat());
      ops_.Add(delta.mat(), h.mat());
    }
    return ComputeLogits(ops_, h.mat(), final_norm_, lm_head_, batch.logit_rows,
                         config_.rms_norm_eps);
  }

 private:
  struct Layer {
    Tensor attn_norm;  // input_layernorm
    Tensor ffn_norm;   // post_attention_layernorm
    MlaWeights attn;
    FeedForwardWeights ffn;  // dense MLP or MoE
  };

  absl::Status LoadLayer(Checkpoint& checkpoint, const WeightSelection& selection, int64_t l,
                         Layer& layer) {
    const ModelConfig& c = config_;
    const std::string prefix = absl::StrCat("model.layers.", l);
    absl::Status s = ReadWeight(checkpoint, prefix + ".input_layernorm.weight", {c.hidden_size},
                                &layer.attn_norm);
    if (s.ok()) {
      s = ReadWeight(checkpoint, prefix + ".post_attention_layernorm.weight", {c.hidden_size},
                     &layer.ffn_norm);
    }
    if (!s.ok()) return s;
    auto attn = LoadMla(checkpoint, prefix + ".self_attn", c);
    if (!attn.ok()) return attn.status();
    layer.attn = *std::move(attn);
    auto ffn = LoadFeedForward(checkpoint, prefix + ".mlp", l, c, selection);
    if (!ffn.ok()) return ffn.status();
    layer.ffn = *std::move(ffn);
    return absl::OkStatus();
  }

  const ModelConfig config_;
  Ops& ops_;
  const ModelOptions options_;
  const RopeTable rope_;
  Tensor embed_;       // [vocab, hidden]
  Tensor final_norm_;  // [hidden]
  Tensor lm_head_;     // [vocab, hidden]
  std::vector<Layer> layers_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> LoadDeepseekV3(Checkpoint& checkpoint,
                                                      const ModelConfig& config,
                                                      const WeightSelection& selection, Ops& ops,
                                                      const ModelOptions& options) {
  auto model = std::make_unique<DeepseekV3>(config, ops, options);
  if (absl::Status s = model->Load(checkpoint, selection); !s.ok()) return s;
  return model;
}

}  // namespace moeserve
