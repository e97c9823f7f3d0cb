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
  Qwen3Moe(const ModelConfig& config, Ops& ops)
      : config_(config), ops_(ops), rope_(MakeRopeTable(config.rope, RopeStyle::kRotateHalf)) {}

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
      auto attn = LoadGqa(checkpoint, absl::StrCat("model.layers.", l, ".self_attn"), config_,
                          /*qk_norm=*/true);
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
                               GqaForward(ops_, layer.attn, config_, rope_, seqs, positions,
                                          cache.layer(static_cast<int64_t>(l)), x, out);
                             });
    if (!valid.ok()) return valid;
    return logits;
  }

  const ForwardStats& last_forward_stats() const override { return stack_.stats(); }

 private:
  struct Layer {
    DecoderLayerCommon common;  // norms and the dense or MoE feed-forward part
    GqaWeights attn;
  };

  const ModelConfig config_;
  Ops& ops_;
  const RopeTable rope_;
  EmbeddingAndHead io_;
  std::vector<Layer> layers_;
  DecoderStack stack_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> LoadQwen3Moe(Checkpoint& checkpoint,
                                                    const ModelConfig& config,
                                                    const WeightSelection& selection, Ops& ops,
                                                    const ModelOptions& options) {
  auto model = std::make_unique<Qwen3Moe>(config, ops);
  if (absl::Status s = model->Load(checkpoint, selection, options.parallel); !s.ok()) return s;
  return model;
}

}  // namespace moeserve
