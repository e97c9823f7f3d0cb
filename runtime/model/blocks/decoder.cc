#include "runtime/model/blocks/decoder.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "kernels/null_ops.h"

namespace moeserve {

absl::StatusOr<EmbeddingAndHead> LoadEmbeddingAndHead(const WeightReader& reader,
                                                      const ModelConfig& c) {
  EmbeddingAndHead io;
  absl::Status s = ReadWeight(reader, "model.embed_tokens.weight", {c.vocab_size, c.hidden_size},
                              WeightUse::kEmbedding, &io.embed);
  if (s.ok()) {
    s = ReadWeight(reader, "model.norm.weight", {c.hidden_size}, WeightUse::kVector,
                   &io.final_norm);
  }
  if (s.ok()) {
    if (c.tie_word_embeddings) {
      io.lm_head = io.embed;  // every backend's embedding dtype is one Linear takes
    } else {
      s = ReadWeight(reader, "lm_head.weight", {c.vocab_size, c.hidden_size}, WeightUse::kMatrix,
                     &io.lm_head);
    }
  }
  if (!s.ok()) return s;
  return io;
}

absl::StatusOr<DecoderLayerCommon> LoadDecoderLayerCommon(const WeightReader& reader, int64_t layer,
                                                          const ModelConfig& c,
                                                          const WeightSelection& selection) {
  DecoderLayerCommon common;
  const std::string prefix = absl::StrCat("model.layers.", layer);
  absl::Status s = ReadWeight(reader, prefix + ".input_layernorm.weight", {c.hidden_size},
                              WeightUse::kVector, &common.attn_norm);
  if (s.ok()) {
    s = ReadWeight(reader, prefix + ".post_attention_layernorm.weight", {c.hidden_size},
                   WeightUse::kVector, &common.ffn_norm);
  }
  if (!s.ok()) return s;
  auto ffn = LoadFeedForward(reader, prefix + ".mlp", layer, c, selection);
  if (!ffn.ok()) return ffn.status();
  common.ffn = *std::move(ffn);
  return common;
}

std::vector<MicroBatch> SplitMicroBatches(const ForwardBatch& batch,
                                          std::span<const int32_t> positions, int count) {
  const auto total = static_cast<int64_t>(batch.tokens.size());
  std::vector<MicroBatch> mbs(static_cast<size_t>(count >= 2 ? 2 : 1));
  size_t split = batch.seqs.size();
  if (mbs.size() == 2) {
    int64_t rows = 0;
    split = 0;
    while (split < batch.seqs.size() && rows * 2 < total) rows += batch.seqs[split++].num_tokens;
  }
  size_t next = 0;
  for (size_t m = 0; m < mbs.size(); ++m) {
    MicroBatch& mb = mbs[m];
    const size_t end = m == 0 ? split : batch.seqs.size();
    mb.row_begin = next < batch.seqs.size() ? batch.seqs[next].token_begin : total;
    for (; next < end; ++next) {
      SeqSlice s = batch.seqs[next];
      s.token_begin -= mb.row_begin;
      mb.rows += s.num_tokens;
      mb.seqs.push_back(s);
    }
    mb.positions =
        positions.subspan(static_cast<size_t>(mb.row_begin), static_cast<size_t>(mb.rows));
  }
  return mbs;
}

namespace {

// Rows of logits computed at a time: the workspace holds one chunk, copied
// to the host before the next is computed (prompt log-probabilities of a long
// prompt need one row per prompt token).
constexpr int64_t kLogitChunkRows = 64;

}  // namespace

absl::Status DecoderStack::Init(const ModelConfig& config, Backend& backend,
                                const ModelOptions& model_options) {
  config_ = &config;
  backend_ = &backend;
  options_ = model_options.parallel;
  max_tokens_ = model_options.max_batch_tokens;
  const ParallelOptions& options = options_;
  if (max_tokens_ <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max batch tokens must be positive, got ", max_tokens_));
  }
  if (options.micro_batches != 1 && options.micro_batches != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("micro-batches must be 1 or 2, got ", options.micro_batches));
  }
  if (options.overlap && options.micro_batches != 2) {
    return absl::InvalidArgumentError("overlapping the all-to-all needs 2 micro-batches");
  }
  if (options.comm == nullptr) {
    local_ = std::make_unique<LocalCommunicator>();
    comm_ = local_.get();
  } else {
    comm_ = options.comm;
  }
  const int32_t ranks = comm_->size();
  const auto layers = static_cast<size_t>(config.num_hidden_layers);
  moe_layers_.assign(layers, false);
  for (size_t l = 0; l < layers; ++l) moe_layers_[l] = config.IsMoeLayer(static_cast<int64_t>(l));
  if (options_.placement.layers.empty()) {
    options_.placement.layers.resize(layers);
    for (size_t l = 0; l < layers; ++l) {
      if (moe_layers_[l]) {
        options_.placement.layers[l] =
            ContiguousPlacement(ranks, static_cast<int32_t>(config.n_routed_experts));
      }
    }
  }
  if (options_.placement.layers.size() != layers) {
    return absl::InvalidArgumentError(absl::StrCat("the expert placement covers ",
                                                   options_.placement.layers.size(),
                                                   " layers; the model has ", layers));
  }
  for (size_t l = 0; l < layers; ++l) {
    const LayerPlacement& p = options_.placement.layers[l];
    if (!moe_layers_[l]) continue;
    if (p.ranks != ranks || p.replicas.size() != static_cast<size_t>(config.n_routed_experts)) {
      return absl::InvalidArgumentError(
          absl::StrCat("the expert placement of layer ", l, " is for ", p.ranks, " ranks and ",
                       p.replicas.size(), " experts; the group has ", ranks,
                       " ranks and the model ", config.n_routed_experts, " experts"));
    }
    max_slots_ = std::max<int64_t>(max_slots_, static_cast<int64_t>(p.ranks) * p.slots_per_rank);
  }

  CreateStreams();
  null_ops_ = CreateNullOps();
  auto iota = backend.AllocateTensor(DType::kI32, {max_tokens_});
  if (!iota.ok()) return iota.status();
  iota_ = *std::move(iota);
  std::vector<int32_t> host_iota(static_cast<size_t>(max_tokens_));
  std::iota(host_iota.begin(), host_iota.end(), 0);
  compute_->CopyToDevice(iota_.raw(), host_iota.data(), host_iota.size() * sizeof(int32_t));
  tables_.resize(layers);
  for (size_t l = 0; l < layers; ++l) {
    if (!moe_layers_[l]) continue;
    auto table = MakeMoeLayerTable(backend, *compute_, options_.placement.layers[l], comm_->rank());
    if (!table.ok()) return table.status();
    tables_[l] = *std::move(table);
  }
  if (absl::Status s = compute_->Synchronize(); !s.ok()) return s;  // host_iota goes away
  schedule_ = BuildOverlapSchedule(moe_layers_, options_.micro_batches, options_.overlap);
  executor_ = std::make_unique<OverlapExecutor>(backend, *compute_, *comm_stream_, schedule_);
  return absl::OkStatus();
}

void DecoderStack::CreateStreams() {
  executor_.reset();  // holds the old streams
  ops_.reset();
  compute_ = backend_->CreateStream();
  comm_stream_ = backend_->CreateStream();
  ops_ = backend_->CreateOps(*compute_);
  if (!schedule_.steps.empty() || !moe_layers_.empty()) {
    executor_ = std::make_unique<OverlapExecutor>(*backend_, *compute_, *comm_stream_, schedule_);
  }
}

WeightSelection DecoderStack::Selection() const {
  WeightSelection selection;
  selection.layer_experts.resize(moe_layers_.size());
  for (size_t l = 0; l < moe_layers_.size(); ++l) {
    if (moe_layers_[l]) {
      selection.layer_experts[l] = options_.placement.layers[l].ExpertsOfRank(comm_->rank());
    }
  }
  return selection;
}

absl::Status DecoderStack::CheckPlanned(const ForwardBatch& batch) const {
  const auto tokens = static_cast<int64_t>(batch.tokens.size());
  if (tokens > max_tokens_) {
    return absl::InvalidArgumentError(
        absl::StrCat("a step of ", tokens, " tokens is more than the ", max_tokens_,
                     " this model's workspace was planned for (max batch tokens)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Tensor> DecoderStack::RunPass(Pass& pass) {
  const ModelConfig& c = *config_;
  const bool planning = pass.planning;
  std::unique_ptr<Workspace> plan_ws = planning ? Workspace::ForPlanning() : nullptr;
  Workspace& ws = planning ? *plan_ws : *workspace_;
  Ops& ops = planning ? *null_ops_ : *ops_;
  Stream& stream = *compute_;
  const ForwardBatch& batch = *pass.batch;
  const auto tokens = static_cast<int64_t>(batch.tokens.size());
  const int64_t hidden = c.hidden_size;
  ws.Reset();

  // The step's inputs, uploaded once. The host vectors stay alive until the
  // streams are synchronized at the end of the pass.
  MatView h = ws.Matrix(tokens, hidden);
  MatView normed = ws.Matrix(tokens, hidden);
  MatView delta = ws.Matrix(tokens, hidden);
  std::span<int32_t> ids = ws.Array<int32_t>(tokens);
  std::span<int32_t> pos = ws.Array<int32_t>(tokens);
  const std::vector<int32_t> positions = TokenPositions(batch);
  if (!planning && tokens > 0) {
    stream.CopyToDevice(ids.data(), batch.tokens.data(), ids.size_bytes());
    stream.CopyToDevice(pos.data(), positions.data(), pos.size_bytes());
  }
  const std::vector<MicroBatch> mbs = SplitMicroBatches(batch, pos, options_.micro_batches);

  stats_.expert_load.resize(moe_layers_.size());
  std::vector<std::span<int64_t>> loads(moe_layers_.size());
  std::vector<MoeExchange> exchanges(mbs.size());
  for (size_t l = 0; l < moe_layers_.size(); ++l) {
    stats_.expert_load[l].assign(moe_layers_[l] ? static_cast<size_t>(c.n_routed_experts) : 0, 0);
    if (!moe_layers_[l]) continue;
    loads[l] = ws.Array<int64_t>(c.n_routed_experts);
    if (!planning) stream.Fill(loads[l].data(), 0, loads[l].size_bytes());
  }
  if (max_slots_ > 0) {
    LayerPlacement widest;
    widest.ranks = 1;
    widest.slots_per_rank = static_cast<int32_t>(max_slots_);
    for (size_t m = 0; m < mbs.size(); ++m) {
      exchanges[m] = AllocateMoeExchange(ws, c, widest, mbs[m].rows, max_tokens_);
    }
  }
  if (tokens > 0) ops.Embedding(pass.io->embed, ids, h);

  StepContext ctx{ops, ws,
                  std::span<const int32_t>(static_cast<const int32_t*>(iota_.raw()),
                                           static_cast<size_t>(max_tokens_))};
  auto exchange_of = [&](int micro_batch, int64_t l) {
    const LayerPlacement& p = options_.placement.layer(l);
    return MoeExchangeForSlots(exchanges[static_cast<size_t>(micro_batch)],
                               static_cast<int64_t>(p.ranks) * p.slots_per_rank);
  };
  auto moe_context = [&](int64_t l) {
    MoeContext m;
    m.weights = &pass.common(l).ffn.moe;
    m.config = &c;
    m.placement = &options_.placement.layer(l);
    m.table = &tables_[static_cast<size_t>(l)];
    m.rank = comm_->rank();
    m.expert_load = loads[static_cast<size_t>(l)];
    return m;
  };
  auto compute = [&](const Stage& stage) {
    const MicroBatch& mb = mbs[static_cast<size_t>(stage.micro_batch)];
    const int64_t l = stage.layer;
    const DecoderLayerCommon& common = pass.common(l);
    MatView hm = h.Rows(mb.row_begin, mb.rows);
    MatView nm = normed.Rows(mb.row_begin, mb.rows);
    MatView dm = delta.Rows(mb.row_begin, mb.rows);
    switch (stage.kind) {
      case StageKind::kAttention: {
        if (mb.rows > 0) {
          ops.RmsNorm(hm, common.attn_norm, c.rms_norm_eps, nm);
          const PagedCacheView cache_layer =
              pass.cache != nullptr ? pass.cache->layer(l) : PagedCacheView{};
          pass.attention(ctx, l, mb, cache_layer, nm, dm);
          ops.Add(dm, hm);
          ops.RmsNorm(hm, common.ffn_norm, c.rms_norm_eps, nm);
        }
        if (common.ffn.is_moe) {
          MoeExchange ex = exchange_of(stage.micro_batch, l);
          MoeRoute(ops, moe_context(l), nm, ex);
        } else if (mb.rows > 0) {
          ops.GatedFfn(nm, common.ffn.dense.gate, common.ffn.dense.up, common.ffn.dense.down, dm);
          ops.Add(dm, hm);
        }
        break;
      }
      case StageKind::kShared: {
        MoeExchange ex = exchange_of(stage.micro_batch, l);
        MoeShared(ops, moe_context(l), nm, ex);
        break;
      }
      case StageKind::kExperts: {
        MoeExchange ex = exchange_of(stage.micro_batch, l);
        MoeExperts(ops, moe_context(l), ex);
        break;
      }
      case StageKind::kReduce:
        if (mb.rows > 0) {
          MoeExchange ex = exchange_of(stage.micro_batch, l);
          MoeReduce(ops, moe_context(l), ex, dm);
          ops.Add(dm, hm);
        }
        break;
      case StageKind::kDispatch:
      case StageKind::kCombine:
        break;  // communication stages never reach compute
    }
  };
  auto communicate = [&](const Stage& stage, Stream& on) {
    MoeExchange ex = exchange_of(stage.micro_batch, stage.layer);
    const LayerPlacement& p = options_.placement.layer(stage.layer);
    if (stage.kind == StageKind::kDispatch) {
      QueueMoeDispatch(*comm_, on, p, ex, backend_->host_accessible());
    } else {
      QueueMoeCombine(*comm_, on, p, ex, backend_->host_accessible());
    }
  };

  const double exchanged_before = comm_->exchange_seconds();
  if (planning) {
    // The same stages in schedule order; no exchange, no event.
    for (const ScheduleStep& step : schedule_.steps) {
      if (step.action == ScheduleStep::kCompute) compute(step.stage);
    }
  } else {
    compute_->ResetTimes();
    comm_stream_->ResetTimes();
    executor_->Queue(compute, communicate);
  }

  // Logits of the asked rows, a chunk at a time, into host memory.
  const auto n = static_cast<int64_t>(batch.logit_rows.size());
  const int64_t vocab = pass.io->lm_head.dim(0);
  const int64_t chunk = std::min(kLogitChunkRows, planning ? max_tokens_ : n);
  std::vector<int32_t> rows32(batch.logit_rows.begin(), batch.logit_rows.end());
  std::span<int32_t> rows = ws.Array<int32_t>(planning ? max_tokens_ : n);
  MatView picked = ws.Matrix(chunk, hidden);
  MatView chunk_logits = ws.Matrix(chunk, vocab);
  Tensor logits = planning ? Tensor() : Tensor::Empty(DType::kF32, {n, vocab});
  if (!planning && n > 0) {
    stream.CopyToDevice(rows.data(), rows32.data(), rows.size_bytes());
    for (int64_t begin = 0; begin < n; begin += chunk) {
      const int64_t count = std::min(chunk, n - begin);
      MatView p = picked.Rows(0, count);
      // A backend whose memory is host memory writes the logits where the
      // caller reads them; another computes them in the workspace and copies.
      MatView out = backend_->host_accessible() ? logits.mat().Rows(begin, count)
                                                : chunk_logits.Rows(0, count);
      ops.GatherRows(h, rows.subspan(static_cast<size_t>(begin), static_cast<size_t>(count)), p);
      ops.RmsNorm(p, pass.io->final_norm, c.rms_norm_eps, p);
      ops.Linear(p, pass.io->lm_head, out);
      if (!backend_->host_accessible()) {
        stream.CopyToHost(logits.f32() + begin * vocab, out.data,
                          static_cast<size_t>(count * vocab) * sizeof(float));
      }
    }
  }
  if (planning) {
    // Room for a split of the tokens between micro-batches other than the
    // planned one: each buffer rounds up to the alignment on its own.
    const size_t bytes = ws.high_water_bytes() + (size_t{1} << 20);
    auto created = Workspace::Create(*backend_, bytes);
    if (!created.ok()) {
      return absl::Status(created.status().code(),
                          absl::StrCat("the step workspace for ", max_tokens_, " tokens per step (",
                                       bytes, " bytes): ", created.status().message()));
    }
    workspace_ = *std::move(created);
    return Tensor();
  }
  for (size_t l = 0; l < moe_layers_.size(); ++l) {
    if (!moe_layers_[l]) continue;
    stream.CopyToHost(stats_.expert_load[l].data(), loads[l].data(), loads[l].size_bytes());
  }
  absl::Status status = compute_->Synchronize();
  if (absl::Status s = comm_stream_->Synchronize(); status.ok()) status = s;

  stats_.communication = {};
  const double exchanged = comm_->exchange_seconds() - exchanged_before;
  const StreamTimes busy = compute_->times();
  CommunicationTiming& t = stats_.communication;
  t.all_to_all_seconds = exchanged;
  if (options_.overlap) {
    t.exposed_seconds = busy.waiting_seconds;
    t.compute_seconds = busy.busy_seconds;
  } else {
    t.exposed_seconds = exchanged;
    t.compute_seconds = std::max(0.0, busy.busy_seconds - exchanged);
  }
  if (!status.ok()) {
    // A failed stream stays failed; the next step (after the group is
    // formed again, say) gets fresh ones. The old ones have drained.
    CreateStreams();
    return status;
  }
  return logits;
}

}  // namespace moeserve
