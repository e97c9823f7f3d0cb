#include "runtime/model/model.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/model/architectures.h"

namespace moeserve {

bool WeightSelection::WantsExpert(int64_t layer, int32_t expert) const {
  if (layer >= 0 && static_cast<size_t>(layer) < layer_experts.size() &&
      !layer_experts[static_cast<size_t>(layer)].empty()) {
    const auto& e = layer_experts[static_cast<size_t>(layer)];
    return std::find(e.begin(), e.end(), expert) != e.end();
  }
  return experts.empty() || std::find(experts.begin(), experts.end(), expert) != experts.end();
}

absl::StatusOr<std::unique_ptr<Model>> LoadModel(Checkpoint& checkpoint,
                                                 const WeightSelection& selection, Backend& backend,
                                                 const ModelOptions& options) {
  auto config = ParseModelConfig(checkpoint.config_json());
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(checkpoint.dir(), "/", config.status().message()));
  }
  if (options.parallel.comm != nullptr &&
      (!selection.experts.empty() || !selection.layer_experts.empty())) {
    return absl::InvalidArgumentError(
        "a model in an expert-parallel group loads the experts of its placement; pass no "
        "weight selection");
  }
  for (int32_t e : selection.experts) {
    if (e < 0 || e >= config->n_routed_experts) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert id ", e, " is outside [0, ", config->n_routed_experts, ")"));
    }
  }
  switch (config->arch) {
    case Architecture::kDeepseekV3:
      return LoadDeepseekV3(checkpoint, *config, selection, backend, options);
    case Architecture::kQwen3Moe:
      return LoadQwen3Moe(checkpoint, *config, selection, backend, options);
    case Architecture::kDeepseekV4:
      return CheckServable(checkpoint, *config);
  }
  return absl::InternalError("unknown architecture");
}

absl::Status CheckServable(Checkpoint& checkpoint, const ModelConfig& config) {
  if (config.arch == Architecture::kDeepseekV4) return RefuseDeepseekV4(checkpoint, config);
  return absl::OkStatus();
}

std::vector<int32_t> TokenPositions(const ForwardBatch& batch) {
  std::vector<int32_t> positions(batch.tokens.size());
  for (const SeqSlice& s : batch.seqs) {
    for (int64_t j = 0; j < s.num_tokens; ++j) {
      positions[static_cast<size_t>(s.token_begin + j)] =
          static_cast<int32_t>(s.context_len - s.num_tokens + j);
    }
  }
  return positions;
}

absl::Status ValidateBatch(const ForwardBatch& batch, const ModelConfig& config,
                           const PagedKvCache& cache) {
  for (size_t i = 0; i < batch.tokens.size(); ++i) {
    const int32_t id = batch.tokens[i];
    if (id < 0 || id >= config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " at batch row ", i,
                                                     " is outside the vocabulary [0, ",
                                                     config.vocab_size, ")"));
    }
  }
  int64_t next_row = 0;
  const int64_t block_size = cache.options().block_size;
  for (size_t i = 0; i < batch.seqs.size(); ++i) {
    const SeqSlice& s = batch.seqs[i];
    if (s.token_begin != next_row || s.num_tokens < 0 || s.context_len < s.num_tokens) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", i, " of the batch: rows [", s.token_begin, ", +", s.num_tokens,
                       ") with context ", s.context_len, " do not follow row ", next_row));
    }
    if (s.context_len > config.max_position_embeddings) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", i, " of the batch: context of ", s.context_len,
                       " tokens exceeds max_position_embeddings ", config.max_position_embeddings));
    }
    if (static_cast<int64_t>(s.block_table.size()) * block_size < s.context_len) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", i, " of the batch: ", s.block_table.size(),
                       " KV blocks hold fewer than ", s.context_len, " tokens"));
    }
    for (int32_t b : s.block_table) {
      if (b < 0 || b >= cache.options().num_blocks) {
        return absl::InvalidArgumentError(
            absl::StrCat("sequence ", i, " of the batch: KV block ", b, " does not exist"));
      }
    }
    next_row += s.num_tokens;
  }
  if (next_row != static_cast<int64_t>(batch.tokens.size())) {
    return absl::InvalidArgumentError(absl::StrCat("the batch's sequences cover ", next_row,
                                                   " rows but it has ", batch.tokens.size(),
                                                   " tokens"));
  }
  for (int64_t r : batch.logit_rows) {
    if (r < 0 || r >= next_row) {
      return absl::InvalidArgumentError(absl::StrCat("logit row ", r, " is outside the batch"));
    }
  }
  return absl::OkStatus();
}

absl::Status ReadWeight(const WeightReader& reader, const std::string& name,
                        std::vector<int64_t> shape, WeightUse use, Tensor* out) {
  auto raw = reader.checkpoint.ReadRaw(name, shape);
  if (!raw.ok()) return raw.status();
  auto t = reader.backend.LoadWeight(raw->host(), use);
  if (!t.ok()) return t.status();
  *out = *std::move(t);
  return absl::OkStatus();
}

}  // namespace moeserve
