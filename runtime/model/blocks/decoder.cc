#include "runtime/model/blocks/decoder.h"

#include <algorithm>
#include <iostream>
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

std::vector<MicroBatch> SplitMicroBatches(const ForwardBatch& batch, int count) {
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
  }
  return mbs;
}

namespace {

// Rows of logits computed at a time: the workspace holds one chunk, copied
// to the host before the next is computed (prompt log-probabilities of a long
// prompt need one row per prompt token).
constexpr int64_t kLogitChunkRows = 64;

}  // namespace

DecoderStack::DecoderStack() = default;
DecoderStack::~DecoderStack() = default;

absl::Status DecoderStack::Init(const ModelConfig& config, Backend& backend,
                                const ModelOptions& model_options) {
  config_ = &config;
  backend_ = &backend;
  options_ = model_options.parallel;
  max_tokens_ = model_options.max_batch_tokens;
  max_exchange_tokens_ = model_options.max_exchange_tokens;
  const ParallelOptions& options = options_;
  if (max_tokens_ <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max batch tokens must be positive, got ", max_tokens_));
  }
  if (max_exchange_tokens_ <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max exchange tokens must be positive, got ", max_exchange_tokens_));
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

  // Graphs replay one stream's work: a schedule that posts exchanges to the
  // communication stream (the overlap) runs eagerly.
  graphs_on_ = model_options.graphs &&
               std::none_of(schedule_.steps.begin(), schedule_.steps.end(),
                            [](const ScheduleStep& s) { return s.action == ScheduleStep::kPost; });
  for (int64_t b : model_options.graph_batch_sizes) {
    if (b <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("graph batch sizes must be positive, got ", b));
    }
    if (b <= max_tokens_) buckets_.push_back(b);
  }
  std::sort(buckets_.begin(), buckets_.end());
  buckets_.erase(std::unique(buckets_.begin(), buckets_.end()), buckets_.end());
  return absl::OkStatus();
}

void DecoderStack::CreateStreams() {
  graphs_.clear();     // captured on the old streams' op set
  executors_.clear();  // hold the old streams
  ops_.reset();
  compute_ = backend_->CreateStream();
  comm_stream_ = backend_->CreateStream();
  ops_ = backend_->CreateOps(*compute_);
}

OverlapSchedule DecoderStack::ScheduleFor(int64_t rounds) const {
  return rounds == 1 ? schedule_
                     : BuildOverlapSchedule(moe_layers_, options_.micro_batches, false, rounds);
}

OverlapExecutor& DecoderStack::Executor(int64_t rounds) {
  std::unique_ptr<OverlapExecutor>& e = executors_[rounds];
  if (e == nullptr) {
    e = std::make_unique<OverlapExecutor>(*backend_, *compute_, *comm_stream_,
                                          ScheduleFor(rounds));
  }
  return *e;
}

ExchangeShape DecoderStack::StepExchange(const ForwardBatch& batch, int64_t rows) const {
  int64_t group = rows;
  if (comm_->size() > 1) group = batch.group_max_tokens > 0 ? batch.group_max_tokens : max_tokens_;
  return ExchangeShapeFor(std::max(group, rows), max_exchange_tokens_);
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
  if (static_cast<int64_t>(batch.seqs.size()) > max_tokens_) {
    return absl::InvalidArgumentError(
        absl::StrCat("a step of ", batch.seqs.size(), " sequences is more than the ", max_tokens_,
                     " this model's step inputs were planned for (max batch tokens)"));
  }
  if (static_cast<int64_t>(batch.logit_rows.size()) > max_tokens_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a step asking for the logits of ", batch.logit_rows.size(), " rows is more than the ",
        max_tokens_, " this model's step inputs were planned for (max batch tokens)"));
  }
  if (batch.group_max_tokens < 0 || batch.group_max_tokens > max_tokens_ ||
      (batch.group_max_tokens > 0 && batch.group_max_tokens < tokens)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a step whose largest rank runs ", batch.group_max_tokens, " tokens (group max tokens) ",
        "must have between this rank's ", tokens, " and the planned ", max_tokens_));
  }
  return absl::OkStatus();
}

// A pass's inputs in backend memory, and the host data they were copied from
// (kept until the streams are synchronized).
struct DecoderStack::Inputs {
  int64_t rows = 0;
  std::span<int32_t> ids, positions;  // [rows]
  std::span<const int32_t> logit_rows;
  std::vector<MicroBatch> mbs;
  std::vector<SeqTable> tables;  // by micro-batch
  // Rows of no sequence (a bucket's padding) come out of attention as zero
  // (ops.h), so they stay finite through the layers.
  bool replay = false;  // captured for replay: no host sequences, no uploads
  std::function<std::span<const int32_t>(const std::vector<int32_t>&)> upload;
  std::vector<std::span<int64_t>> loads;  // by layer: expert loads (set by QueuePass)
  // By micro-batch: its tokens that are not padding, one count in backend
  // memory (empty spans for eager steps, which have no padding).
  std::vector<std::span<int32_t>> tokens_in_use;
  // How the MoE layers exchange this step's tokens (the same on every rank).
  ExchangeShape exchange;

  // Host side.
  std::vector<int32_t> host_ids, host_positions, host_in_use;
  std::vector<HostSeqTable> host_tables;
};

// A decode bucket's graph and the static inputs it reads.
struct DecoderStack::GraphBucket {
  std::unique_ptr<Workspace> arena;  // ids, positions, tables: filled before each replay
  Inputs in;
  MatView logits;       // [rows, vocab], in the step workspace
  bool warmed = false;  // its padded pass has run once eagerly
  std::unique_ptr<Graph> graph;
};

namespace {

// Copies `host` into `arena`'s next array on `stream`.
std::span<int32_t> UploadInts(Stream& stream, Workspace& arena, const std::vector<int32_t>& host) {
  std::span<int32_t> dst = arena.Array<int32_t>(static_cast<int64_t>(host.size()));
  if (!host.empty()) stream.CopyToDevice(dst.data(), host.data(), dst.size_bytes());
  return dst;
}

// Arrays for `t`'s shape in `arena`.
SeqTable AllocateTable(Workspace& arena, int64_t num_seqs, int64_t rows, int64_t max_blocks) {
  SeqTable t;
  t.token_begin = arena.Array<int32_t>(num_seqs).data();
  t.num_tokens = arena.Array<int32_t>(num_seqs).data();
  t.context_len = arena.Array<int32_t>(num_seqs).data();
  t.block_tables = arena.Array<int32_t>(num_seqs * max_blocks).data();
  t.slots = arena.Array<int32_t>(rows).data();
  t.num_seqs = num_seqs;
  t.rows = rows;
  t.max_blocks = max_blocks;
  return t;
}

// Copies `host` into the arrays of `t` (allocated for its shape) on `stream`.
void CopyTable(Stream& stream, const HostSeqTable& host, SeqTable& t) {
  auto copy = [&](const int32_t* dst, const std::vector<int32_t>& src) {
    if (!src.empty()) {
      stream.CopyToDevice(const_cast<int32_t*>(dst), src.data(), src.size() * sizeof(int32_t));
    }
  };
  copy(t.token_begin, host.token_begin);
  copy(t.num_tokens, host.num_tokens);
  copy(t.context_len, host.context_len);
  copy(t.block_tables, host.block_tables);
  copy(t.slots, host.slots);
  t.max_tokens = host.max_tokens;
  t.max_context = host.max_context;
}

// The host inputs of in.mbs over in.rows rows of `batch` (padded with token
// 0 at position 0 past the batch's tokens), for blocks of `block_size`.
// With `bucket`, each micro-batch's table has an entry per row and the
// fixed stride and bounds of a graph.
void BuildHostInputs(const ForwardBatch& batch, int64_t block_size, bool bucket, int64_t max_blocks,
                     DecoderStack::Inputs& in) {
  in.host_ids.assign(static_cast<size_t>(in.rows), 0);
  std::copy(batch.tokens.begin(), batch.tokens.end(), in.host_ids.begin());
  in.host_positions.assign(static_cast<size_t>(in.rows), 0);
  const std::vector<int32_t> positions = TokenPositions(batch);
  std::copy(positions.begin(), positions.end(), in.host_positions.begin());
  in.host_tables.clear();
  for (const MicroBatch& mb : in.mbs) {
    in.host_tables.push_back(bucket ? HostSeqTable::Build(mb.seqs, mb.rows, block_size, mb.rows,
                                                          max_blocks, 1, max_blocks * block_size)
                                    : HostSeqTable::Build(mb.seqs, mb.rows, block_size));
  }
}

}  // namespace

int64_t DecoderStack::max_blocks(int64_t block_size) const {
  return CeilDiv(config_->max_position_embeddings, block_size);
}

absl::Status DecoderStack::EnsureInputs(int64_t block_size) {
  if (inputs_ != nullptr && inputs_block_size_ == block_size) return absl::OkStatus();
  // ids, positions, logit rows, and per micro-batch: three per-sequence
  // arrays, slots, block tables; room for a few uploads of per-sequence
  // arrays; each array rounds up to the workspace alignment.
  const auto ints = static_cast<size_t>(max_tokens_) *
                    (3 + 2 * 4 + 8 + static_cast<size_t>(max_blocks(block_size)));
  const size_t bytes = ints * sizeof(int32_t) + 64 * Workspace::kAlignment;
  inputs_.reset();
  auto created = Workspace::Create(*backend_, bytes);
  if (!created.ok()) {
    return absl::Status(
        created.status().code(),
        absl::StrCat("the step inputs for ", max_tokens_, " tokens per step and ", "blocks of ",
                     block_size, " tokens (", bytes, " bytes): ", created.status().message()));
  }
  inputs_ = *std::move(created);
  inputs_block_size_ = block_size;
  graphs_.clear();  // their tables were laid out for the old block size
  return absl::OkStatus();
}

void DecoderStack::QueuePass(Pass& pass, Workspace& ws, Ops& ops, Inputs& in, MatView logits,
                             float* host_logits) {
  const ModelConfig& c = *config_;
  const bool planning = pass.planning;
  const int64_t tokens = in.rows;
  const int64_t hidden = c.hidden_size;

  MatView h = ws.Matrix(tokens, hidden);
  MatView normed = ws.Matrix(tokens, hidden);
  MatView delta = ws.Matrix(tokens, hidden);
  const std::vector<MicroBatch>& mbs = in.mbs;

  stats_.expert_load.resize(moe_layers_.size());
  std::vector<std::span<int64_t>>& loads = in.loads;
  loads.assign(moe_layers_.size(), {});
  std::vector<MoeExchange> exchanges(mbs.size());
  for (size_t l = 0; l < moe_layers_.size(); ++l) {
    stats_.expert_load[l].assign(moe_layers_[l] ? static_cast<size_t>(c.n_routed_experts) : 0, 0);
    if (!moe_layers_[l]) continue;
    loads[l] = ws.Array<int64_t>(c.n_routed_experts);
    if (!planning) compute_->Fill(loads[l].data(), 0, loads[l].size_bytes());
  }
  if (max_slots_ > 0) {
    LayerPlacement widest;
    widest.ranks = 1;
    widest.slots_per_rank = static_cast<int32_t>(max_slots_);
    for (size_t m = 0; m < mbs.size(); ++m) {
      exchanges[m] = AllocateMoeExchange(ws, c, widest, mbs[m].rows, in.exchange.capacity);
    }
  }
  if (tokens > 0) ops.Embedding(pass.io->embed, in.ids, h);

  StepContext ctx{ops, ws,
                  std::span<const int32_t>(static_cast<const int32_t*>(iota_.raw()),
                                           static_cast<size_t>(max_tokens_)),
                  in.upload};
  // The exchange of a micro-batch in layer l, and of one of its rounds.
  auto whole_exchange_of = [&](int micro_batch, int64_t l) {
    const LayerPlacement& p = options_.placement.layer(l);
    return MoeExchangeForSlots(exchanges[static_cast<size_t>(micro_batch)],
                               static_cast<int64_t>(p.ranks) * p.slots_per_rank);
  };
  auto exchange_of = [&](int micro_batch, int64_t l, int64_t round) {
    return MoeExchangeRound(whole_exchange_of(micro_batch, l), round);
  };
  // The rows of `v` (a micro-batch's) that round `round`'s exchange `ex` carries.
  auto round_rows = [&](MatView v, int64_t round, const MoeExchange& ex) {
    return v.Rows(std::min(round * in.exchange.capacity, v.rows), ex.tokens);
  };
  auto moe_context = [&](int64_t l, int micro_batch) {
    MoeContext m;
    if (!in.tokens_in_use.empty())
      m.tokens_in_use = in.tokens_in_use[static_cast<size_t>(micro_batch)];
    m.weights = &pass.common(l).ffn.moe;
    m.config = &c;
    m.placement = &options_.placement.layer(l);
    m.table = &tables_[static_cast<size_t>(l)];
    m.rank = comm_->rank();
    m.expert_load = loads[static_cast<size_t>(l)];
    return m;
  };
  auto compute = [&](const Stage& stage) {
    const auto m = static_cast<size_t>(stage.micro_batch);
    const MicroBatch& mb = mbs[m];
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
          AttentionBatch batch;
          batch.table = planning ? SeqTable{} : in.tables[m];
          batch.positions =
              in.positions.subspan(static_cast<size_t>(mb.row_begin), static_cast<size_t>(mb.rows));
          if (!in.replay) batch.host = mb.seqs;
          pass.attention(ctx, l, batch, cache_layer, nm, dm);
          ops.Add(dm, hm);
          ops.RmsNorm(hm, common.ffn_norm, c.rms_norm_eps, nm);
        }
        if (common.ffn.is_moe) {
          // Route every token; pack the first round (the whole micro-batch
          // when there is one round).
          MoeExchange all = whole_exchange_of(stage.micro_batch, l);
          MoeRouter(ops, moe_context(l, stage.micro_batch), nm, all);
          MoeExchange first = exchange_of(stage.micro_batch, l, 0);
          MoePack(ops, moe_context(l, stage.micro_batch), round_rows(nm, 0, first), first);
        } else if (mb.rows > 0) {
          ops.GatedFfn(nm, common.ffn.dense.gate, common.ffn.dense.up, common.ffn.dense.down, dm);
          ops.Add(dm, hm);
        }
        break;
      }
      case StageKind::kPack: {
        MoeExchange ex = exchange_of(stage.micro_batch, l, stage.round);
        MoePack(ops, moe_context(l, stage.micro_batch), round_rows(nm, stage.round, ex), ex);
        break;
      }
      case StageKind::kShared: {
        MoeExchange ex = whole_exchange_of(stage.micro_batch, l);  // once, every token
        MoeShared(ops, moe_context(l, stage.micro_batch), nm, ex);
        break;
      }
      case StageKind::kExperts: {
        MoeExchange ex = exchange_of(stage.micro_batch, l, stage.round);
        MoeExperts(ops, moe_context(l, stage.micro_batch), ex);
        break;
      }
      case StageKind::kReduce: {
        MoeExchange ex = exchange_of(stage.micro_batch, l, stage.round);
        if (ex.tokens > 0) {
          const MatView out = round_rows(dm, stage.round, ex);
          MoeReduce(ops, moe_context(l, stage.micro_batch), ex, out);
          ops.Add(out, round_rows(hm, stage.round, ex));
        }
        break;
      }
      case StageKind::kDispatch:
      case StageKind::kCombine:
        break;  // communication stages never reach compute
    }
  };
  auto communicate = [&](const Stage& stage, Stream& on) {
    MoeExchange ex = exchange_of(stage.micro_batch, stage.layer, stage.round);
    const LayerPlacement& p = options_.placement.layer(stage.layer);
    if (stage.kind == StageKind::kDispatch) {
      QueueMoeDispatch(*comm_, on, p, ex, backend_->host_accessible());
    } else {
      QueueMoeCombine(*comm_, on, p, ex, backend_->host_accessible());
    }
  };

  if (planning) {
    // The same stages in schedule order; no exchange, no event.
    const OverlapSchedule schedule = ScheduleFor(in.exchange.rounds);
    for (const ScheduleStep& step : schedule.steps) {
      if (step.action == ScheduleStep::kCompute) compute(step.stage);
    }
  } else {
    Executor(in.exchange.rounds).Queue(compute, communicate);
  }

  // Logits of the rows in.logit_rows names, a chunk at a time: into
  // `logits` (backend memory) or, chunk by chunk, to `host_logits`.
  const auto n = static_cast<int64_t>(in.logit_rows.size());
  const int64_t vocab = pass.io->lm_head.dim(0);
  const int64_t chunk = planning ? std::min(kLogitChunkRows, max_tokens_)
                                 : std::min<int64_t>(kLogitChunkRows, std::max<int64_t>(n, 1));
  MatView picked = ws.Matrix(chunk, hidden);
  MatView chunk_logits = host_logits != nullptr ? ws.Matrix(chunk, vocab) : MatView{};
  if (planning) return;
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t count = std::min(chunk, n - begin);
    MatView p = picked.Rows(0, count);
    // Where the chunk's logits are computed: `logits`; else the caller's
    // host memory when the backend's memory is host memory; else the
    // workspace, copied out.
    MatView out = host_logits == nullptr ? logits.Rows(begin, count)
                  : backend_->host_accessible()
                      ? MatView{host_logits + begin * vocab, count, vocab, vocab}
                      : chunk_logits.Rows(0, count);
    ops.GatherRows(h, in.logit_rows.subspan(static_cast<size_t>(begin), static_cast<size_t>(count)),
                   p);
    ops.RmsNorm(p, pass.io->final_norm, c.rms_norm_eps, p);
    ops.Linear(p, pass.io->lm_head, out);
    if (host_logits != nullptr && !backend_->host_accessible()) {
      compute_->CopyToHost(host_logits + begin * vocab, out.data,
                           static_cast<size_t>(count * vocab) * sizeof(float));
    }
  }
}

absl::Status DecoderStack::FinishPass(const Inputs& in, double exchanged_before) {
  for (size_t l = 0; l < moe_layers_.size(); ++l) {
    if (!moe_layers_[l]) continue;
    compute_->CopyToHost(stats_.expert_load[l].data(), in.loads[l].data(),
                         in.loads[l].size_bytes());
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
  }
  return status;
}

absl::StatusOr<Tensor> DecoderStack::RunPass(Pass& pass) {
  const ForwardBatch& batch = *pass.batch;
  const auto tokens = static_cast<int64_t>(batch.tokens.size());
  const int64_t vocab = pass.io->lm_head.dim(0);

  Inputs in;
  in.mbs = SplitMicroBatches(batch, options_.micro_batches);
  // Planning: the largest exchange, whatever the group.
  in.exchange = pass.planning ? ExchangeShapeFor(max_tokens_, max_exchange_tokens_)
                              : StepExchange(batch, tokens);
  stats_.exchange = in.exchange;
  if (pass.planning) {
    // Measure the workspace: the largest step, the largest logits buffer
    // (a graph bucket's, or one chunk).
    std::unique_ptr<Workspace> plan_ws = Workspace::ForPlanning();
    std::unique_ptr<Workspace> plan_inputs = Workspace::ForPlanning();
    in.rows = tokens;
    in.ids = plan_inputs->Array<int32_t>(tokens);
    in.positions = plan_inputs->Array<int32_t>(tokens);
    in.tables.resize(in.mbs.size());
    in.logit_rows = plan_inputs->Array<int32_t>(1);
    const int64_t graph_rows = graphs_on_ && !buckets_.empty() ? buckets_.back() : 0;
    MatView graph_logits = plan_ws->Matrix(graph_rows, vocab);
    QueuePass(pass, *plan_ws, *null_ops_, in, graph_logits, nullptr);
    plan_ws->Matrix(std::min(kLogitChunkRows, max_tokens_), vocab);  // a chunk copied out
    // Room for a split of the tokens between micro-batches other than the
    // planned one: each buffer rounds up to the alignment on its own.
    const size_t bytes = plan_ws->high_water_bytes() + (size_t{1} << 20);
    auto created = Workspace::Create(*backend_, bytes);
    if (!created.ok()) {
      return absl::Status(created.status().code(),
                          absl::StrCat("the step workspace for ", max_tokens_, " tokens per step (",
                                       bytes, " bytes): ", created.status().message()));
    }
    workspace_ = *std::move(created);
    return Tensor();
  }

  const int64_t block_size = pass.cache->options().block_size;
  if (absl::Status s = EnsureInputs(block_size); !s.ok()) return s;
  inputs_->Reset();
  workspace_->Reset();
  in.rows = tokens;
  BuildHostInputs(batch, block_size, false, 0, in);
  in.ids = UploadInts(*compute_, *inputs_, in.host_ids);
  in.positions = UploadInts(*compute_, *inputs_, in.host_positions);
  const std::vector<int32_t> rows32(batch.logit_rows.begin(), batch.logit_rows.end());
  in.logit_rows = UploadInts(*compute_, *inputs_, rows32);
  for (const HostSeqTable& t : in.host_tables) {
    in.tables.push_back(AllocateTable(*inputs_, t.num_seqs(), t.rows, t.max_blocks));
    CopyTable(*compute_, t, in.tables.back());
  }
  // Per-call uploads (MLA's subsets of one form): the same contents share
  // memory; the host copies live until the pass is over.
  std::map<std::vector<int32_t>, std::span<const int32_t>> uploaded;
  in.upload = [&](const std::vector<int32_t>& host) {
    auto it = uploaded.find(host);
    if (it == uploaded.end()) {
      it = uploaded.emplace(host, std::span<const int32_t>()).first;
      it->second = UploadInts(*compute_, *inputs_, it->first);
    }
    return it->second;
  };

  const double exchanged_before = comm_->exchange_seconds();
  compute_->ResetTimes();
  comm_stream_->ResetTimes();
  stats_.graph_batch_size = 0;
  const auto n = static_cast<int64_t>(batch.logit_rows.size());
  Tensor logits = Tensor::Empty(DType::kF32, {n, vocab});
  QueuePass(pass, *workspace_, *ops_, in, MatView{}, n > 0 ? logits.f32() : nullptr);
  if (absl::Status s = FinishPass(in, exchanged_before); !s.ok()) return s;
  return logits;
}

std::optional<absl::StatusOr<Tensor>> DecoderStack::RunGraph(Pass& pass) {
  if (!graphs_on_ || !pass.replayable || pass.planning || pass.cache == nullptr ||
      buckets_.empty()) {
    return std::nullopt;
  }
  // A decode step: one new token per sequence, in row order, and the logits
  // of every row in that order.
  const ForwardBatch& batch = *pass.batch;
  const size_t n = batch.seqs.size();
  if (n == 0 || batch.tokens.size() != n || batch.logit_rows.size() != n) return std::nullopt;
  for (size_t i = 0; i < n; ++i) {
    const SeqSlice& s = batch.seqs[i];
    if (s.token_begin != static_cast<int64_t>(i) || s.num_tokens != 1 ||
        batch.logit_rows[i] != static_cast<int64_t>(i)) {
      return std::nullopt;
    }
  }
  const auto bucket = std::lower_bound(buckets_.begin(), buckets_.end(), static_cast<int64_t>(n));
  if (bucket == buckets_.end()) return std::nullopt;
  const int64_t rows = *bucket;
  // The padded rows go through the MoE layers in one exchange round (only
  // the sequences' rows are dispatched, but the buffers hold all rows).
  const ExchangeShape exchange = StepExchange(batch, rows);
  if (exchange.rounds != 1 || exchange.capacity < rows) return std::nullopt;
  const int64_t block_size = pass.cache->options().block_size;
  if (absl::Status s = EnsureInputs(block_size); !s.ok()) return absl::StatusOr<Tensor>(s);
  const int64_t stride = max_blocks(block_size);
  const int64_t vocab = pass.io->lm_head.dim(0);
  // A graph writes the cache it was captured with.
  if (graph_cache_ != pass.cache) {
    graphs_.clear();
    graph_cache_ = pass.cache;
  }

  std::unique_ptr<GraphBucket>& slot = graphs_[{rows, exchange.capacity}];
  if (slot == nullptr) {
    // The bucket's static inputs: one allocation, once per bucket.
    auto g = std::make_unique<GraphBucket>();
    Inputs& in = g->in;
    in.rows = rows;
    in.replay = true;
    in.exchange = exchange;
    const int64_t first = options_.micro_batches == 2 ? (rows + 1) / 2 : rows;
    in.mbs.resize(options_.micro_batches == 2 ? 2 : 1);
    in.mbs[0].rows = first;
    if (in.mbs.size() == 2) {
      in.mbs[1].row_begin = first;
      in.mbs[1].rows = rows - first;
    }
    const size_t bytes =
        static_cast<size_t>(rows) * (2 + 2 * 4 + static_cast<size_t>(stride)) * sizeof(int32_t) +
        32 * Workspace::kAlignment;
    auto arena = Workspace::Create(*backend_, bytes);
    if (!arena.ok()) return absl::StatusOr<Tensor>(arena.status());
    g->arena = *std::move(arena);
    in.ids = g->arena->Array<int32_t>(rows);
    in.positions = g->arena->Array<int32_t>(rows);
    in.logit_rows = std::span<const int32_t>(static_cast<const int32_t*>(iota_.raw()),
                                             static_cast<size_t>(rows));
    for (const MicroBatch& mb : in.mbs) {
      in.tables.push_back(AllocateTable(*g->arena, mb.rows, mb.rows, stride));
      in.tokens_in_use.push_back(g->arena->Array<int32_t>(1));
    }
    slot = std::move(g);
  }
  GraphBucket& g = *slot;
  Inputs& in = g.in;
  for (MicroBatch& mb : in.mbs) mb.seqs.clear();
  for (size_t i = 0; i < n; ++i) {
    const bool second = in.mbs.size() == 2 && static_cast<int64_t>(i) >= in.mbs[1].row_begin;
    MicroBatch& mb = in.mbs[second ? 1 : 0];
    SeqSlice s = batch.seqs[i];
    s.token_begin -= mb.row_begin;
    mb.seqs.push_back(s);
  }
  BuildHostInputs(batch, block_size, true, stride, in);
  compute_->CopyToDevice(in.ids.data(), in.host_ids.data(), in.ids.size_bytes());
  compute_->CopyToDevice(in.positions.data(), in.host_positions.data(), in.positions.size_bytes());
  in.host_in_use.clear();
  for (const MicroBatch& mb : in.mbs) {
    in.host_in_use.push_back(static_cast<int32_t>(mb.seqs.size()));  // one row per sequence
  }
  for (size_t m = 0; m < in.mbs.size(); ++m) {
    CopyTable(*compute_, in.host_tables[m], in.tables[m]);
    compute_->CopyToDevice(in.tokens_in_use[m].data(), &in.host_in_use[m], sizeof(int32_t));
  }

  const double exchanged_before = comm_->exchange_seconds();
  compute_->ResetTimes();
  comm_stream_->ResetTimes();
  if (!g.warmed) {
    // The bucket's first step runs its padded pass eagerly: the op set
    // sizes its scratch buffers and plans its products for these shapes, so
    // that the capture (next step) allocates nothing.
    workspace_->Reset();
    g.logits = workspace_->Matrix(rows, vocab);
    QueuePass(pass, *workspace_, *ops_, in, g.logits, nullptr);
    g.warmed = true;
  } else if (g.graph == nullptr) {
    workspace_->Reset();
    g.logits = workspace_->Matrix(rows, vocab);
    absl::Status captured = compute_->BeginCapture();
    if (captured.ok()) {
      QueuePass(pass, *workspace_, *ops_, in, g.logits, nullptr);
      auto graph = compute_->EndCapture();
      captured = graph.status();
      if (graph.ok()) g.graph = *std::move(graph);
    }
    if (!captured.ok()) {
      // Eager from now on; this step too.
      graphs_off_reason_ = absl::StrCat("capturing a decode step of ", rows,
                                        " sequences failed: ", captured.message());
      std::cerr << "moeserve: decode graphs turned off, steps run eagerly: " << graphs_off_reason_
                << "\n";
      graphs_on_ = false;
      graphs_.clear();
      return std::nullopt;
    }
  }
  if (g.graph != nullptr) {
    if (absl::Status s = g.graph->Launch(*compute_); !s.ok()) return absl::StatusOr<Tensor>(s);
    ++graph_replays_;
  }
  stats_.graph_batch_size = rows;
  stats_.exchange = exchange;
  Tensor logits = Tensor::Empty(DType::kF32, {static_cast<int64_t>(n), vocab});
  compute_->CopyToHost(logits.f32(), g.logits.data, static_cast<size_t>(n * vocab) * sizeof(float));
  if (absl::Status s = FinishPass(in, exchanged_before); !s.ok()) return absl::StatusOr<Tensor>(s);
  return absl::StatusOr<Tensor>(std::move(logits));
}

}  // namespace moeserve
