#include "runtime/model/blocks/moe.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace moeserve {

absl::StatusOr<MoeWeights> LoadMoe(Checkpoint& checkpoint, const std::string& prefix, int64_t layer,
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
    if (!selection.WantsExpert(layer, e)) continue;
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

namespace {

float SlotAsFloat(int32_t slot) {
  float f;
  std::memcpy(&f, &slot, sizeof f);
  return f;
}

int32_t FloatAsSlot(float f) {
  int32_t slot;
  std::memcpy(&slot, &f, sizeof slot);
  return slot;
}

}  // namespace

void MoeRoute(Ops& ops, const MoeContext& ctx, ConstMatView x, MoeExchange& ex) {
  const ModelConfig& config = *ctx.config;
  const LayerPlacement& placement = *ctx.placement;
  const int64_t tokens = x.rows;
  const int64_t top_k = config.num_experts_per_tok;
  const int64_t hidden = config.hidden_size;
  const int64_t pairs = tokens * top_k;
  ex.tokens = tokens;
  ex.experts.assign(static_cast<size_t>(pairs), 0);
  ex.gains.assign(static_cast<size_t>(pairs), 0.0f);
  if (tokens > 0) {
    Tensor logits = Tensor::Empty(DType::kF32, {tokens, config.n_routed_experts});
    ops.Linear(x, ctx.weights->gate, logits.mat());
    RoutingParams routing;
    routing.scoring = config.scoring_func;
    routing.correction_bias =
        ctx.weights->correction_bias.empty() ? nullptr : ctx.weights->correction_bias.f32();
    routing.num_experts = config.n_routed_experts;
    routing.top_k = top_k;
    routing.n_group = config.n_group;
    routing.topk_group = config.topk_group;
    routing.norm_topk_prob = config.norm_topk_prob;
    routing.routed_scaling_factor = config.routed_scaling_factor;
    ops.RouteTopK(logits.mat(), routing, ex.experts, ex.gains);
  }

  // Each pair goes to one replica of its expert: the replicas of an expert
  // take its pairs in turn, starting from a rank-dependent one so that ranks
  // do not all favour the first replica.
  const auto ranks = static_cast<size_t>(placement.ranks);
  std::vector<int32_t> pair_slot(static_cast<size_t>(pairs));
  std::vector<int64_t> turn(placement.replicas.size(), 0);
  ex.send_rows.assign(ranks, 0);
  for (int64_t i = 0; i < pairs; ++i) {
    const auto e = static_cast<size_t>(ex.experts[static_cast<size_t>(i)]);
    const std::vector<int32_t>& replicas = placement.replicas[e];
    const int64_t pick = (ctx.rank + turn[e]++) % static_cast<int64_t>(replicas.size());
    const int32_t slot = replicas[static_cast<size_t>(pick)];
    pair_slot[static_cast<size_t>(i)] = slot;
    ++ex.send_rows[static_cast<size_t>(placement.RankOfSlot(slot))];
    if (ctx.expert_load != nullptr) ++(*ctx.expert_load)[e];
  }
  // Rows in (destination rank, slot, token) order: each expert then sees its
  // tokens in order, as the single-process block computes them.
  ex.send_pair.resize(static_cast<size_t>(pairs));
  for (int64_t i = 0; i < pairs; ++i)
    ex.send_pair[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  std::stable_sort(ex.send_pair.begin(), ex.send_pair.end(), [&](int32_t a, int32_t b) {
    return pair_slot[static_cast<size_t>(a)] < pair_slot[static_cast<size_t>(b)];
  });
  const int64_t width = hidden + 1;
  ex.send = Tensor::Empty(DType::kF32, {pairs, width});
  for (int64_t r = 0; r < pairs; ++r) {
    const int32_t pair = ex.send_pair[static_cast<size_t>(r)];
    float* row = ex.send.f32() + r * width;
    std::memcpy(row, x.row(pair / top_k), sizeof(float) * static_cast<size_t>(hidden));
    row[hidden] = SlotAsFloat(placement.LocalSlot(pair_slot[static_cast<size_t>(pair)]));
  }
  ex.send_counts.resize(ranks);
  for (size_t p = 0; p < ranks; ++p) ex.send_counts[p] = ex.send_rows[p] * width;
}

absl::Status MoeDispatch(Communicator& comm, int32_t slots_per_rank, MoeExchange& ex) {
  const auto ranks = static_cast<size_t>(comm.size());
  ex.recv_rows.assign(ranks, 0);
  if (absl::Status s = comm.AllToAllCounts(ex.send_rows, ex.recv_rows); !s.ok()) return s;
  const int64_t width = ex.send.dim(1);
  int64_t rows = 0;
  ex.recv_counts.resize(ranks);
  for (size_t p = 0; p < ranks; ++p) {
    rows += ex.recv_rows[p];
    ex.recv_counts[p] = ex.recv_rows[p] * width;
  }
  ex.recv = Tensor::Empty(DType::kF32, {rows, width});
  absl::Status s =
      comm.AllToAllV({ex.send.f32(), static_cast<size_t>(ex.send.numel())}, ex.send_counts,
                     {ex.recv.f32(), static_cast<size_t>(ex.recv.numel())}, ex.recv_counts);
  if (!s.ok()) return s;
  // Every row names a local slot; one that does not means the ranks disagree
  // on the placement, and nothing of this step can be trusted.
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t slot = FloatAsSlot(ex.recv.f32()[r * width + width - 1]);
    if (slot < 0 || slot >= slots_per_rank) {
      return absl::InternalError(
          absl::StrCat("rank ", comm.rank(), " received a row for local slot ", slot, " but holds ",
                       slots_per_rank, " slots: the ranks disagree on the expert placement"));
    }
  }
  return absl::OkStatus();
}

void MoeShared(Ops& ops, const MoeContext& ctx, ConstMatView x, MoeExchange& ex) {
  const MoeWeights& weights = *ctx.weights;
  const int64_t hidden = ctx.config->hidden_size;
  ex.shared_out = Tensor::Empty(DType::kF32, {ex.tokens, hidden});
  if (ex.tokens == 0) return;
  if (weights.shared.loaded()) {
    ops.GatedFfn(x, weights.shared.gate, weights.shared.up, weights.shared.down,
                 ex.shared_out.mat());
  } else {
    std::memset(ex.shared_out.f32(), 0, sizeof(float) * static_cast<size_t>(ex.tokens * hidden));
  }
}

void MoeExperts(Ops& ops, const MoeContext& ctx, MoeExchange& ex) {
  const MoeWeights& weights = *ctx.weights;
  const int64_t hidden = ctx.config->hidden_size;
  const int64_t received = ex.recv.dim(0);
  ex.expert_out = Tensor::Empty(DType::kF32, {received, hidden});
  if (received == 0) return;
  // Received rows grouped by local slot, in arrival order within a slot.
  const std::vector<int32_t> local = ctx.placement->ExpertsOfRank(ctx.rank);
  std::vector<std::vector<int32_t>> rows(local.size());
  const ConstMatView in = ConstMatView(ex.recv.mat());
  for (int64_t r = 0; r < received; ++r) {
    const int32_t slot = FloatAsSlot(in.row(r)[hidden]);
    rows[static_cast<size_t>(slot)].push_back(static_cast<int32_t>(r));
  }
  size_t max_rows = 0;
  for (const auto& r : rows) max_rows = std::max(max_rows, r.size());
  Tensor xe = Tensor::Empty(DType::kF32, {static_cast<int64_t>(max_rows), hidden});
  Tensor ye = Tensor::Empty(DType::kF32, {static_cast<int64_t>(max_rows), hidden});
  const ConstMatView features = in.Columns(0, hidden);
  MatView out = ex.expert_out.mat();
  for (size_t slot = 0; slot < rows.size(); ++slot) {
    if (rows[slot].empty()) continue;
    const FfnWeights& expert = weights.experts[static_cast<size_t>(local[slot])];
    const auto n = static_cast<int64_t>(rows[slot].size());
    if (!expert.loaded()) {
      // Left out by a weight selection: it contributes nothing.
      for (int32_t r : rows[slot]) {
        std::memset(out.row(r), 0, sizeof(float) * static_cast<size_t>(hidden));
      }
      continue;
    }
    MatView xin = xe.mat().Rows(0, n);
    MatView yout = ye.mat().Rows(0, n);
    ops.GatherRows(features, rows[slot], xin);
    ops.GatedFfn(xin, expert.gate, expert.up, expert.down, yout);
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(out.row(rows[slot][static_cast<size_t>(i)]), yout.row(i),
                  sizeof(float) * static_cast<size_t>(hidden));
    }
  }
}

absl::Status MoeCombine(Communicator& comm, MoeExchange& ex) {
  const auto ranks = static_cast<size_t>(comm.size());
  const int64_t hidden = ex.expert_out.dim(1);
  std::vector<int64_t> back_send(ranks), back_recv(ranks);
  for (size_t p = 0; p < ranks; ++p) {
    back_send[p] = ex.recv_rows[p] * hidden;
    back_recv[p] = ex.send_rows[p] * hidden;
  }
  ex.combined = Tensor::Empty(DType::kF32, {ex.send.dim(0), hidden});
  return comm.AllToAllV({ex.expert_out.f32(), static_cast<size_t>(ex.expert_out.numel())},
                        back_send, {ex.combined.f32(), static_cast<size_t>(ex.combined.numel())},
                        back_recv);
}

void MoeReduce(Ops& ops, const MoeContext& ctx, MoeExchange& ex, MatView out) {
  const int64_t hidden = ctx.config->hidden_size;
  const int64_t top_k = ctx.config->num_experts_per_tok;
  for (int64_t t = 0; t < ex.tokens; ++t) {
    std::memcpy(out.row(t), ex.shared_out.f32() + t * hidden,
                sizeof(float) * static_cast<size_t>(hidden));
  }
  const auto pairs = static_cast<int64_t>(ex.send_pair.size());
  if (pairs == 0) return;
  // Add each token's expert outputs in ascending expert order (ties, which a
  // top-k never has, in pair order), so the sum is the same float sum
  // whatever the placement, replicas or micro-batching.
  std::vector<int32_t> order(static_cast<size_t>(pairs));
  for (int64_t r = 0; r < pairs; ++r) order[static_cast<size_t>(r)] = static_cast<int32_t>(r);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    const int32_t pa = ex.send_pair[static_cast<size_t>(a)];
    const int32_t pb = ex.send_pair[static_cast<size_t>(b)];
    const int32_t ea = ex.experts[static_cast<size_t>(pa)];
    const int32_t eb = ex.experts[static_cast<size_t>(pb)];
    return ea != eb ? ea < eb : pa < pb;
  });
  Tensor rows = Tensor::Empty(DType::kF32, {pairs, hidden});
  std::vector<int32_t> tokens(static_cast<size_t>(pairs));
  std::vector<float> gains(static_cast<size_t>(pairs));
  for (int64_t i = 0; i < pairs; ++i) {
    const int32_t r = order[static_cast<size_t>(i)];
    const int32_t pair = ex.send_pair[static_cast<size_t>(r)];
    std::memcpy(rows.f32() + i * hidden, ex.combined.f32() + static_cast<int64_t>(r) * hidden,
                sizeof(float) * static_cast<size_t>(hidden));
    tokens[static_cast<size_t>(i)] = static_cast<int32_t>(pair / top_k);
    gains[static_cast<size_t>(i)] = ex.gains[static_cast<size_t>(pair)];
  }
  ops.ScatterAddRows(rows.mat(), tokens, gains, out);
}

absl::StatusOr<FeedForwardWeights> LoadFeedForward(Checkpoint& checkpoint,
                                                   const std::string& prefix, int64_t layer,
                                                   const ModelConfig& config,
                                                   const WeightSelection& selection) {
  FeedForwardWeights w;
  w.is_moe = config.IsMoeLayer(layer);
  if (w.is_moe) {
    auto moe = LoadMoe(checkpoint, prefix, layer, config, selection);
    if (!moe.ok()) return moe.status();
    w.moe = *std::move(moe);
  } else {
    auto dense = LoadFfn(checkpoint, prefix, config.hidden_size, config.intermediate_size);
    if (!dense.ok()) return dense.status();
    w.dense = *std::move(dense);
  }
  return w;
}

}  // namespace moeserve
