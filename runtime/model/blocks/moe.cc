#include "runtime/model/blocks/moe.h"

#include <algorithm>
#include <span>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/model/architectures.h"

namespace moeserve {

absl::StatusOr<MoeWeights> LoadMoe(const WeightReader& reader, const std::string& prefix,
                                   int64_t layer, const ModelConfig& config,
                                   const WeightSelection& selection) {
  MoeWeights w;
  if (absl::Status s =
          ReadWeight(reader, prefix + ".gate.weight", {config.n_routed_experts, config.hidden_size},
                     WeightUse::kMatrix, &w.gate);
      !s.ok()) {
    return s;
  }
  const std::string bias_name = prefix + ".gate.e_score_correction_bias";
  if (config.arch == Architecture::kDeepseekV3 && reader.checkpoint.Has(bias_name)) {
    // The routing op reads it: a vector (float32 on every backend).
    if (absl::Status s = ReadWeight(reader, bias_name, {config.n_routed_experts},
                                    WeightUse::kVector, &w.correction_bias);
        !s.ok()) {
      return s;
    }
  }
  w.experts.resize(static_cast<size_t>(config.n_routed_experts));
  for (int32_t e = 0; e < config.n_routed_experts; ++e) {
    if (!selection.WantsExpert(layer, e)) continue;
    auto expert = LoadFfn(reader, absl::StrCat(prefix, ".experts.", e), config.hidden_size,
                          config.moe_intermediate_size);
    if (!expert.ok()) return expert.status();
    w.experts[static_cast<size_t>(e)] = *std::move(expert);
  }
  if (config.n_shared_experts > 0) {
    auto shared = LoadFfn(reader, prefix + ".shared_experts", config.hidden_size,
                          config.n_shared_experts * config.moe_intermediate_size);
    if (!shared.ok()) return shared.status();
    w.shared = *std::move(shared);
  }
  return w;
}

absl::StatusOr<MoeLayerTable> MakeMoeLayerTable(Backend& backend, Stream& stream,
                                                const LayerPlacement& placement, int32_t rank) {
  const auto experts = static_cast<int64_t>(placement.replicas.size());
  int64_t max_replicas = 1;
  for (const auto& r : placement.replicas) {
    max_replicas = std::max<int64_t>(max_replicas, static_cast<int64_t>(r.size()));
  }
  std::vector<int32_t> slots(static_cast<size_t>(experts * max_replicas), -1);
  std::vector<int32_t> counts(static_cast<size_t>(experts));
  for (int64_t e = 0; e < experts; ++e) {
    const auto& r = placement.replicas[static_cast<size_t>(e)];
    counts[static_cast<size_t>(e)] = static_cast<int32_t>(r.size());
    std::copy(r.begin(), r.end(), slots.begin() + e * max_replicas);
  }
  MoeLayerTable t;
  auto s = backend.AllocateTensor(DType::kI32, {experts * max_replicas});
  if (!s.ok()) return s.status();
  auto c = backend.AllocateTensor(DType::kI32, {experts});
  if (!c.ok()) return c.status();
  t.replica_slots = *std::move(s);
  t.replica_counts = *std::move(c);
  stream.CopyToDevice(t.replica_slots.raw(), slots.data(), slots.size() * sizeof(int32_t));
  stream.CopyToDevice(t.replica_counts.raw(), counts.data(), counts.size() * sizeof(int32_t));
  if (absl::Status st = stream.Synchronize(); !st.ok()) return st;  // the host vectors go away
  t.table.replica_slots = static_cast<const int32_t*>(t.replica_slots.raw());
  t.table.replica_counts = static_cast<const int32_t*>(t.replica_counts.raw());
  t.table.num_experts = experts;
  t.table.max_replicas = max_replicas;
  t.table.ranks = placement.ranks;
  t.table.slots_per_rank = placement.slots_per_rank;
  t.local_experts = placement.ExpertsOfRank(rank);
  return t;
}

MoeExchange AllocateMoeExchange(Workspace& ws, const ModelConfig& config,
                                const LayerPlacement& placement, int64_t tokens, int64_t capacity) {
  const int64_t hidden = config.hidden_size;
  const int64_t pairs = tokens * config.num_experts_per_tok;
  const int64_t slots = static_cast<int64_t>(placement.ranks) * placement.slots_per_rank;
  MoeExchange ex;
  ex.tokens = tokens;
  ex.capacity = capacity;
  ex.logits = ws.Matrix(tokens, config.n_routed_experts);
  ex.experts = ws.Array<int32_t>(pairs);
  ex.gains = ws.Array<float>(pairs);
  ex.pair_rows = ws.Array<int32_t>(pairs);
  ex.send = ws.Matrix(slots * capacity, hidden);
  ex.send_counts = ws.Array<int32_t>(slots);
  ex.recv = ws.Matrix(slots * capacity, hidden);
  ex.recv_counts = ws.Array<int32_t>(slots);
  ex.expert_out = ws.Matrix(slots * capacity, hidden);
  ex.combined = ws.Matrix(slots * capacity, hidden);
  ex.combine_counts = ws.Array<int32_t>(slots);
  ex.shared_out = ws.Matrix(config.n_shared_experts > 0 ? tokens : 0, hidden);
  return ex;
}

MoeExchange MoeExchangeForSlots(const MoeExchange& ex, int64_t slots) {
  MoeExchange out = ex;
  const int64_t rows = slots * ex.capacity;
  const auto n = static_cast<size_t>(slots);
  out.send = ex.send.Rows(0, rows);
  out.recv = ex.recv.Rows(0, rows);
  out.expert_out = ex.expert_out.Rows(0, rows);
  out.combined = ex.combined.Rows(0, rows);
  out.send_counts = ex.send_counts.subspan(0, n);
  out.recv_counts = ex.recv_counts.subspan(0, n);
  out.combine_counts = ex.combine_counts.subspan(0, n);
  return out;
}

ExchangeShape ExchangeShapeFor(int64_t group_tokens, int64_t max_exchange_tokens) {
  const int64_t tokens = std::max<int64_t>(group_tokens, 1);
  const int64_t most = std::max<int64_t>(max_exchange_tokens, 1);
  ExchangeShape shape;
  while (shape.capacity < tokens && shape.capacity < most) shape.capacity *= 2;
  shape.capacity = std::min(shape.capacity, most);
  shape.rounds = CeilDiv(tokens, shape.capacity);
  return shape;
}

MoeExchange MoeExchangeRound(const MoeExchange& ex, int64_t round) {
  const int64_t begin = std::min(round * ex.capacity, ex.tokens);
  const int64_t tokens = std::min(ex.capacity, ex.tokens - begin);
  if (begin == 0 && tokens == ex.tokens) return ex;
  MoeExchange out = ex;
  const auto pairs = static_cast<size_t>(ex.experts.size() / std::max<size_t>(ex.tokens, 1));
  const size_t first = static_cast<size_t>(begin) * pairs,
               count = static_cast<size_t>(tokens) * pairs;
  out.tokens = tokens;
  out.logits = ex.logits.Rows(begin, tokens);
  out.experts = ex.experts.subspan(first, count);
  out.gains = ex.gains.subspan(first, count);
  out.pair_rows = ex.pair_rows.subspan(first, count);
  if (ex.shared_out.rows > 0) out.shared_out = ex.shared_out.Rows(begin, tokens);
  return out;
}

void MoeRouter(Ops& ops, const MoeContext& ctx, ConstMatView x, MoeExchange& ex) {
  const ModelConfig& config = *ctx.config;
  if (ex.tokens > 0) {
    ops.Linear(x, ctx.weights->gate, ex.logits);
    RoutingParams routing;
    routing.scoring = config.scoring_func;
    routing.correction_bias =
        ctx.weights->correction_bias.empty() ? nullptr : ctx.weights->correction_bias.f32();
    routing.num_experts = config.n_routed_experts;
    routing.top_k = config.num_experts_per_tok;
    routing.n_group = config.n_group;
    routing.topk_group = config.topk_group;
    routing.norm_topk_prob = config.norm_topk_prob;
    routing.routed_scaling_factor = config.routed_scaling_factor;
    ops.RouteTopK(ex.logits, routing, ex.experts, ex.gains);
  }
}

void MoePack(Ops& ops, const MoeContext& ctx, ConstMatView x, MoeExchange& ex) {
  const ModelConfig& config = *ctx.config;
  // Also with no tokens: the counts the dispatch sends must be zeros.
  ops.MoeDispatchLayout(x.Rows(0, ex.tokens), ex.experts, config.num_experts_per_tok,
                        ctx.table->table, ctx.rank, ex.capacity, ex.send, ex.send_counts,
                        ex.pair_rows, ctx.expert_load, ctx.tokens_in_use);
}

namespace {

// Queues the exchange of `send` (groups of `capacity` rows, `send_counts`
// of them in use) into `recv`, one chunk of slots_per_rank groups per rank.
void QueueRows(Communicator& comm, Stream& stream, const LayerPlacement& placement,
               int64_t capacity, bool host_accessible, MatView send,
               std::span<const int32_t> send_counts, MatView recv, std::span<int32_t> recv_counts) {
  Communicator::RowExchange r;
  r.host_accessible = host_accessible;
  r.send = send.data;
  r.send_counts = send_counts.data();
  r.recv = recv.data;
  r.recv_counts = recv_counts.data();
  r.groups = placement.slots_per_rank;
  r.capacity = capacity;
  r.width = send.cols;
  comm.QueueAllToAllRows(stream, r);
}

}  // namespace

void QueueMoeDispatch(Communicator& comm, Stream& stream, const LayerPlacement& placement,
                      MoeExchange& ex, bool host_accessible) {
  QueueRows(comm, stream, placement, ex.capacity, host_accessible, ex.send, ex.send_counts, ex.recv,
            ex.recv_counts);
}

void MoeShared(Ops& ops, const MoeContext& ctx, ConstMatView x, MoeExchange& ex) {
  const FfnWeights& shared = ctx.weights->shared;
  if (ex.tokens > 0 && shared.loaded()) {
    ops.GatedFfn(x, shared.gate, shared.up, shared.down, ex.shared_out);
  }
}

void MoeExperts(Ops& ops, const MoeContext& ctx, MoeExchange& ex) {
  const std::vector<int32_t>& local = ctx.table->local_experts;
  std::vector<ExpertFfnWeights> experts(local.size());
  for (size_t s = 0; s < local.size(); ++s) {
    const FfnWeights& w = ctx.weights->experts[static_cast<size_t>(local[s])];
    if (w.loaded()) experts[s] = {&w.gate, &w.up, &w.down};  // else left out: zeros
  }
  ops.GroupedGatedFfn(ex.recv, ex.recv_counts, ctx.placement->ranks, ex.capacity, experts,
                      ex.expert_out);
}

void QueueMoeCombine(Communicator& comm, Stream& stream, const LayerPlacement& placement,
                     MoeExchange& ex, bool host_accessible) {
  // The outputs go back in the layout they came in, with the counts received.
  QueueRows(comm, stream, placement, ex.capacity, host_accessible, ex.expert_out, ex.recv_counts,
            ex.combined, ex.combine_counts);
}

void MoeReduce(Ops& ops, const MoeContext& ctx, MoeExchange& ex, MatView out) {
  if (ex.tokens == 0) return;
  const ConstMatView shared = ex.shared_out.rows > 0 ? ConstMatView(ex.shared_out)
                                                     : ConstMatView(nullptr, 0, out.cols, out.cols);
  ops.MoeCombineReduce(ex.combined, ex.pair_rows, ex.experts, ex.gains,
                       ctx.config->num_experts_per_tok, shared, out);
}

absl::StatusOr<FeedForwardWeights> LoadFeedForward(const WeightReader& reader,
                                                   const std::string& prefix, int64_t layer,
                                                   const ModelConfig& config,
                                                   const WeightSelection& selection) {
  FeedForwardWeights w;
  w.is_moe = config.IsMoeLayer(layer);
  if (w.is_moe) {
    auto moe = LoadMoe(reader, prefix, layer, config, selection);
    if (!moe.ok()) return moe.status();
    w.moe = *std::move(moe);
  } else {
    auto dense = LoadFfn(reader, prefix, config.hidden_size, config.intermediate_size);
    if (!dense.ok()) return dense.status();
    w.dense = *std::move(dense);
  }
  return w;
}

}  // namespace moeserve
