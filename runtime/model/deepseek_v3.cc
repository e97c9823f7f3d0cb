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
  DeepseekV3(const ModelConfig& config, Ops& ops, const ModelOptions& options)
      : config_(config),
        ops_(ops),
        options_(options),
        rope_(MakeRopeTable(config.rope, RopeStyle::kInterleaved)) {}

  absl::Status Load(Checkpoint& checkpoint, const WeightSelection& given,
                    const ParallelOptions& parallel) {
    if (absl::Status s = stack_.Init(config_, ops_, parallel); !s.ok()) return s;
    const WeightSelection selection = parallel.comm != nullptr ? stack_.Selection() : given;
    auto io = LoadEmbeddingAndHead(checkpoint, config_);
    if (!io.ok()) return io.status();
    io_ = *std::move(io);
    layers_.resize(static_cast<size_t>(config_.num_hidden_layers));
    for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
      Layer& layer = layers_[static_cast<size_t>(l)];
      auto common = LoadDecoderLayerCommon(checkpoint, l, config_, selection);
      if (!common.ok()) return common.status();
      layer.common = *std::move(common);
      auto attn = LoadMla(checkpoint, absl::StrCat("model.layers.", l, ".self_attn"), config_);
      if (!attn.ok()) return attn.status();
      layer.attn = *std::move(attn);
    }
    return absl::OkStatus();
  }

  const ModelConfig& config() const override { return config_; }

  absl::StatusOr<Tensor> Forward(const ForwardBatch& batch, PagedKvCache& cache) override {
    // An invalid batch still goes through the layers, empty: the other
    // ranks of an expert-parallel group wait for this one in every MoE layer.
    const absl::Status valid = ValidateBatch(batch, config_, cache);
    const ForwardBatch nothing;
    auto logits = stack_.Run(io_, layers_, valid.ok() ? batch : nothing,
                             [&](size_t l, const Layer& layer, std::span<const SeqSlice> seqs,
                                 std::span<const int32_t> positions, ConstMatView x, MatView out) {
                               MlaForward(ops_, layer.attn, config_, rope_, options_.mla_form, seqs,
                                          positions, cache.layer(static_cast<int64_t>(l)), x, out);
                             });
    if (!valid.ok()) return valid;
    return logits;
  }

  const ForwardStats& last_forward_stats() const override { return stack_.stats(); }

 private:
  struct Layer {
    DecoderLayerCommon common;  // norms and the dense or MoE feed-forward part
    MlaWeights attn;
  };

  const ModelConfig config_;
  Ops& ops_;
  const ModelOptions options_;
  const RopeTable rope_;
  EmbeddingAndHead io_;
  std::vector<Layer> layers_;
  DecoderStack stack_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> LoadDeepseekV3(Checkpoint& checkpoint,
                                                      const ModelConfig& config,
                                                      const WeightSelection& selection, Ops& ops,
                                                      const ModelOptions& options) {
  auto model = std::make_unique<DeepseekV3>(config, ops, options);
  if (absl::Status s = model->Load(checkpoint, selection, options.parallel); !s.ok()) return s;
  return model;
}

}  // namespace moeserve
