// Qwen3-MoE (Qwen3-30B-A3B, Qwen3-235B-A22B, Qwen3-Coder-480B): grouped-query
// attention with per-head q/k RMSNorm and rotate-half RoPE; MoE layers with
// softmax top-k routing and no shared expert, dense layers where
// mlp_only_layers or decoder_sparse_step say so.
//
// Follows Hugging Face transformers' modeling_qwen3_moe.py.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/model/architectures.h"
#include "runtime/model/blocks/decoder.h"
#include "runtime/model/blocks/gqa.h"

namespace moeserve {
namespace {

class Qwen3Moe final : public Model {
 public:
  Qwen3Moe(const ModelConfig& config, const ModelOptions& options)
      : config_(config),
        options_(options),
        rope_(MakeRopeTable(config.rope, RopeStyle::kRotateHalf)) {}

  absl::Status Load(Checkpoint& checkpoint, const WeightSelection& given, Backend& backend) {
    if (absl::Status s = stack_.Init(config_, backend, options_); !s.ok()) return s;
    const WeightSelection selection =
        options_.parallel.comm != nullptr ? stack_.Selection() : given;
    const WeightReader reader{checkpoint, backend};
    auto io = LoadEmbeddingAndHead(reader, config_);
    if (!io.ok()) return io.status();
    io_ = *std::move(io);
    layers_.resize(static_cast<size_t>(config_.num_hidden_layers));
    for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
      Layer& layer = layers_[static_cast<size_t>(l)];
      auto common = LoadDecoderLayerCommon(reader, l, config_, selection);
      if (!common.ok()) return common.status();
      layer.common = *std::move(common);
      auto attn = LoadGqa(reader, absl::StrCat("model.layers.", l, ".self_attn"), config_,
                          /*qk_norm=*/true);
      if (!attn.ok()) return attn.status();
      layer.attn = *std::move(attn);
    }
    return stack_.Plan(io_, layers_, AttentionFn{this});
  }

  const ModelConfig& config() const override { return config_; }

  absl::StatusOr<Tensor> Forward(const ForwardBatch& batch, PagedKvCache& cache) override {
    // An invalid batch still goes through the layers, empty: the other
    // ranks of an expert-parallel group wait for this one in every MoE layer.
    absl::Status valid = ValidateBatch(batch, config_, cache);
    if (valid.ok()) valid = stack_.CheckPlanned(batch);
    const ForwardBatch nothing;
    auto logits = stack_.Run(io_, layers_, valid.ok() ? batch : nothing, &cache, AttentionFn{this});
    if (!valid.ok()) return valid;
    return logits;
  }

  const ForwardStats& last_forward_stats() const override { return stack_.stats(); }

 private:
  struct Layer {
    DecoderLayerCommon common;  // norms and the dense or MoE feed-forward part
    GqaWeights attn;
  };

  // Layer l's attention over one micro-batch.
  struct AttentionFn {
    const Qwen3Moe* self;
    void operator()(StepContext& step, size_t, const Layer& layer, const AttentionBatch& batch,
                    const PagedCacheView& cache, ConstMatView x, MatView out) const {
      GqaForward(step, layer.attn, self->config_, self->rope_, batch, cache, x, out);
    }
  };

  const ModelConfig config_;
  const ModelOptions options_;
  const RopeTable rope_;
  EmbeddingAndHead io_;
  std::vector<Layer> layers_;
  DecoderStack stack_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> LoadQwen3Moe(Checkpoint& checkpoint,
                                                    const ModelConfig& config,
                                                    const WeightSelection& selection,
                                                    Backend& backend, const ModelOptions& options) {
  auto model = std::make_unique<Qwen3Moe>(config, options);
  if (absl::Status s = model->Load(checkpoint, selection, backend); !s.ok()) return s;
  return model;
}

}  // namespace moeserve
