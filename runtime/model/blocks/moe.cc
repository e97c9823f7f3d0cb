#include "runtime/model/blocks/moe.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace moeserve {

absl::StatusOr<MoeWeights> LoadMoe(Checkpoint& checkpoint, const std::string& prefix,
                                   const ModelConfig& config, const WeightSelection& selection) {
  MoeWeights w;
  const int64_t gate_shape[] = {config.n_routed_experts, config.hidden_size};
  auto gate = checkpoint.ReadF32(prefix + ".gate.weight", gate_shape);
  if (!gate.ok()) return gate.status();
  w.gate = *std::move(gate);
  const std::string bias_name = prefix + ".gate.e_score_correction_bias";
  if (config.arch == Architecture::kDeepseekV3 && checkpoint.Has(bias_name)) {
    const int64_t bias_shape[] = {config.n_routed_experts};
    auto bias = checkpoint.ReadF32(bias_name, bias_shape);
    if (!bias.ok()) return bias.status();
    w.correction_bias = *std::move(bias);
  }
  w.experts.resize(static_cast<size_t>(config.n_routed_experts));
  for (int32_t e = 0; e < config.n_routed_experts; ++e) {
    if (!selection.WantsExpert(e)) continue;
    auto expert = LoadFfn(checkpoint, absl::StrCat(prefix, ".experts.", e), config.hidden_size,
                          config.moe_intermediate_size);
    if (!expert.ok()) return expert.status();
    w.experts[static_cast<size_t>(e)] = *std::move(expert);
  }
  if (config.n_shared_experts > 0) {
    auto shared = LoadFfn(checkpoint, prefix + ".shared_experts", config.hidden_size,
                          config.n_shared_experts * config.moe_intermediate_size);
    if (!shared.ok()) return shared.status();
    w.shared = *std::move(shared);
  }
  return w;
}

void MoeForward(Ops& ops, const MoeWeights& weights, const ModelConfig& config, ConstMatView x,
                MatView out) {
  const int64_t tokens = x.rows;
  const int64_t top_k = config.num_experts_per_tok;
  const int64_t hidden = config.hidden_size;

  Tensor logits = Tensor::Empty(DType::kF32, {tokens, config.n_routed_experts});
  ops.Linear(x, weights.gate, logits.mat());
  RoutingParams routing;
  routing.scoring = config.scoring_func;
  routing.correction_bias =
      weights.correction_bias.empty() ? nullptr : weights.correction_bias.f32();
  routing.num_experts = config.n_routed_experts;
  routing.top_k = top_k;
  routing.n_group = config.n_group;
  routing.topk_group = config.topk_group;
  routing.norm_topk_prob = config.norm_topk_prob;
  routing.routed_scaling_factor = config.routed_scaling_factor;
  std::vector<int32_t> ids(static_cast<size_t>(tokens * top_k));
  std::vector<float> gains(ids.size());
  ops.RouteTopK(logits.mat(), routing, ids, gains);

  // Group the (token, expert) pairs by expert: the permutation that later
  // becomes the all-to-all dispatch order.
  std::vector<std::vector<int32_t>> rows(static_cast<size_t>(config.n_routed_experts));
  std::vector<std::vector<float>> row_gains(rows.size());
  for (int64_t i = 0; i < tokens * top_k; ++i) {
    const auto e = static_cast<size_t>(ids[static_cast<size_t>(i)]);
    rows[e].push_back(static_cast<int32_t>(i / top_k));
    row_gains[e].push_back(gains[static_cast<size_t>(i)]);
  }

  if (weights.shared.loaded()) {
    ops.GatedFfn(x, weights.shared.gate, weights.shared.up, weights.shared.down, out);
  } else {
    for (int64_t r = 0; r < tokens; ++r) std::memset(out.row(r), 0, sizeof(float) * hidden);
  }
  size_t max_rows = 0;
  for (const auto& r : rows) max_rows = std::max(max_rows, r.size());
  Tensor xe = Tensor::Empty(DType::kF32, {static_cast<int64_t>(max_rows), hidden});
  Tensor ye = Tensor::Empty(DType::kF32, {static_cast<int64_t>(max_rows), hidden});
  for (size_t e = 0; e < rows.size(); ++e) {
    const FfnWeights& expert = weights.experts[e];
    if (rows[e].empty() || !expert.loaded()) continue;
    const auto n = static_cast<int64_t>(rows[e].size());
    MatView xin = xe.mat().Rows(0, n);
    MatView yout = ye.mat().Rows(0, n);
    ops.GatherRows(x, rows[e], xin);
    ops.GatedFfn(xin, expert.gate, expert.up, expert.down, yout);
    ops.ScatterAddRows(yout, rows[e], row_gains[e], out);
  }
}

absl::StatusOr<FeedForwardWeights> LoadFeedForward(Checkpoint& checkpoint,
                                                   const std::string& prefix, int64_t layer,
                                                   const ModelConfig& config,
                                                   const WeightSelection& selection) {
  FeedForwardWeights w;
  w.is_moe = config.IsMoeLayer(layer);
  if (w.is_moe) {
    auto moe = LoadMoe(checkpoint, prefix, config, selection);
    if (!moe.ok()) return moe.status();
    w.moe = *std::move(moe);
  } else {
    auto dense = LoadFfn(checkpoint, prefix, config.hidden_size, config.intermediate_size);
    if (!dense.ok()) return dense.status();
    w.dense = *std::move(dense);
  }
  return w;
}

void FeedForward(Ops& ops, const FeedForwardWeights& w, const ModelConfig& config, ConstMatView x,
                 MatView out) {
  if (w.is_moe) {
    MoeForward(ops, w.moe, config, x, out);
  } else {
    ops.GatedFfn(x, w.dense.gate, w.dense.up, w.dense.down, out);
  }
}

}  // namespace moeserve
