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
#include "runtime/model/blocks/decoder.h"
#include "runtime/model/blocks/mla.h"

namespace moeserve {
namespace {

class DeepseekV3 final : public Model {
 public:
  DeepseekV3(const ModelConfig& config, const ModelOptions& options)
      : config_(config),
        options_(options),
        rope_(MakeRopeTable(config.rope, RopeStyle::kInterleaved)) {}

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
      auto attn = LoadMla(reader, absl::StrCat("model.layers.", l, ".self_attn"), config_);
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
    // A forced prefill form cannot be replayed: replay uses the absorbed form.
    auto logits = stack_.Run(io_, layers_, valid.ok() ? batch : nothing, &cache, AttentionFn{this},
                             options_.mla_form != MlaForm::kPrefill);
    if (!valid.ok()) return valid;
    return logits;
  }

  const ForwardStats& last_forward_stats() const override { return stack_.stats(); }

 private:
  struct Layer {
    DecoderLayerCommon common;  // norms and the dense or MoE feed-forward part
    MlaWeights attn;
  };

  // Layer l's attention over one micro-batch.
  struct AttentionFn {
    const DeepseekV3* self;
    void operator()(StepContext& step, size_t, const Layer& layer, const AttentionBatch& batch,
                    const PagedCacheView& cache, ConstMatView x, MatView out) const {
      MlaForward(step, layer.attn, self->config_, self->rope_, self->options_.mla_form, batch,
                 cache, x, out);
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

absl::StatusOr<std::unique_ptr<Model>> LoadDeepseekV3(Checkpoint& checkpoint,
                                                      const ModelConfig& config,
                                                      const WeightSelection& selection,
                                                      Backend& backend,
                                                      const ModelOptions& options) {
  auto model = std::make_unique<DeepseekV3>(config, options);
  if (absl::Status s = model->Load(checkpoint, selection, backend); !s.ok()) return s;
  return model;
}

}  // namespace moeserve
