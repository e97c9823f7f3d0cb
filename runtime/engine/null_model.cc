#include "runtime/engine/null_model.h"

#include "absl/status/status.h"

namespace moeserve {
namespace {

class NullModel final : public Model {
 public:
  explicit NullModel(const ModelConfig& config) : config_(config) {}

  const ModelConfig& config() const override { return config_; }

  absl::StatusOr<Tensor> Forward(const ForwardBatch& batch, PagedKvCache& cache) override {
    if (absl::Status s = ValidateBatch(batch, config_, cache); !s.ok()) return s;
    const std::vector<int32_t> positions = TokenPositions(batch);
    const auto rows = static_cast<int64_t>(batch.logit_rows.size());
    const int64_t vocab = config_.vocab_size;
    Tensor logits = Tensor::Zeros(DType::kF32, {rows, vocab});
    float* out = logits.f32();
    for (int64_t i = 0; i < rows; ++i) {
      const auto row = static_cast<size_t>(batch.logit_rows[static_cast<size_t>(i)]);
      if (row >= batch.tokens.size()) {
        return absl::InvalidArgumentError("a logit row outside the batch's tokens");
      }
      out[i * vocab + NullModelToken(batch.tokens[row], positions[row], vocab)] = 16.0f;
    }
    return logits;
  }

  const ForwardStats& last_forward_stats() const override { return stats_; }

 private:
  ModelConfig config_;
  ForwardStats stats_;
};

}  // namespace

int32_t NullModelToken(int32_t token, int64_t position, int64_t vocab_size) {
  const auto mixed = static_cast<uint64_t>(token) * 2654435761u + static_cast<uint64_t>(position);
  return static_cast<int32_t>(mixed % static_cast<uint64_t>(vocab_size));
}

std::unique_ptr<Model> CreateNullModel(const ModelConfig& config) {
  return std::make_unique<NullModel>(config);
}

}  // namespace moeserve
