#include "runtime/model/blocks/decoder.h"

#include "absl/strings/str_cat.h"

namespace moeserve {

absl::StatusOr<EmbeddingAndHead> LoadEmbeddingAndHead(Checkpoint& checkpoint,
                                                      const ModelConfig& c) {
  EmbeddingAndHead io;
  absl::Status s =
      ReadWeight(checkpoint, "model.embed_tokens.weight", {c.vocab_size, c.hidden_size}, &io.embed);
  if (s.ok()) s = ReadWeight(checkpoint, "model.norm.weight", {c.hidden_size}, &io.final_norm);
  if (s.ok()) {
    if (c.tie_word_embeddings) {
      io.lm_head = io.embed;
    } else {
      s = ReadWeight(checkpoint, "lm_head.weight", {c.vocab_size, c.hidden_size}, &io.lm_head);
    }
  }
  if (!s.ok()) return s;
  return io;
}

absl::StatusOr<DecoderLayerCommon> LoadDecoderLayerCommon(Checkpoint& checkpoint, int64_t layer,
                                                          const ModelConfig& c,
                                                          const WeightSelection& selection) {
  DecoderLayerCommon common;
  const std::string prefix = absl::StrCat("model.layers.", layer);
  absl::Status s = ReadWeight(checkpoint, prefix + ".input_layernorm.weight", {c.hidden_size},
                              &common.attn_norm);
  if (s.ok()) {
    s = ReadWeight(checkpoint, prefix + ".post_attention_layernorm.weight", {c.hidden_size},
                   &common.ffn_norm);
  }
  if (!s.ok()) return s;
  auto ffn = LoadFeedForward(checkpoint, prefix + ".mlp", layer, c, selection);
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

absl::Status DecoderStack::Init(const ModelConfig& config, Ops& ops,
                                const ParallelOptions& options) {
  config_ = &config;
  ops_ = &ops;
  options_ = options;
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
  }
  schedule_ = BuildOverlapSchedule(moe_layers_, options_.micro_batches, options_.overlap);
  executor_ = std::make_unique<OverlapExecutor>();
  return absl::OkStatus();
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

absl::StatusOr<Tensor> DecoderStack::RunPass(Pass& pass) {
  const ModelConfig& c = *config_;
  Ops& ops = *ops_;
  const ForwardBatch& batch = *pass.batch;
  const auto tokens = static_cast<int64_t>(batch.tokens.size());
  Tensor h = Tensor::Empty(DType::kF32, {tokens, c.hidden_size});
  Tensor normed = Tensor::Empty(DType::kF32, {tokens, c.hidden_size});
  Tensor delta = Tensor::Empty(DType::kF32, {tokens, c.hidden_size});
  if (tokens > 0) ops.Embedding(pass.io->embed, batch.tokens, h.mat());
  const std::vector<int32_t> positions = TokenPositions(batch);
  const std::vector<MicroBatch> mbs = SplitMicroBatches(batch, positions, options_.micro_batches);
  std::vector<MoeExchange> exchanges(mbs.size());

  stats_.communication = {};
  stats_.expert_load.resize(moe_layers_.size());
  for (size_t l = 0; l < moe_layers_.size(); ++l) {
    stats_.expert_load[l].assign(moe_layers_[l] ? static_cast<size_t>(c.n_routed_experts) : 0, 0);
  }
  auto moe_context = [&](int64_t l) {
    MoeContext ctx;
    ctx.weights = &pass.common(l).ffn.moe;
    ctx.config = &c;
    ctx.placement = &options_.placement.layer(l);
    ctx.rank = comm_->rank();
    ctx.expert_load = &stats_.expert_load[static_cast<size_t>(l)];
    return ctx;
  };

  auto compute = [&](const Stage& stage) {
    const MicroBatch& mb = mbs[static_cast<size_t>(stage.micro_batch)];
    const int64_t l = stage.layer;
    const DecoderLayerCommon& common = pass.common(l);
    MatView hm = h.mat().Rows(mb.row_begin, mb.rows);
    MatView nm = normed.mat().Rows(mb.row_begin, mb.rows);
    MatView dm = delta.mat().Rows(mb.row_begin, mb.rows);
    MoeExchange& ex = exchanges[static_cast<size_t>(stage.micro_batch)];
    switch (stage.kind) {
      case StageKind::kAttention:
        if (mb.rows > 0) {
          ops.RmsNorm(hm, common.attn_norm, c.rms_norm_eps, nm);
          pass.attention(l, mb, nm, dm);
          ops.Add(dm, hm);
          ops.RmsNorm(hm, common.ffn_norm, c.rms_norm_eps, nm);
        }
        if (common.ffn.is_moe) {
          MoeRoute(ops, moe_context(l), nm, ex);
        } else if (mb.rows > 0) {
          ops.GatedFfn(nm, common.ffn.dense.gate, common.ffn.dense.up, common.ffn.dense.down, dm);
          ops.Add(dm, hm);
        }
        break;
      case StageKind::kShared:
        MoeShared(ops, moe_context(l), nm, ex);
        break;
      case StageKind::kExperts:
        MoeExperts(ops, moe_context(l), ex);
        break;
      case StageKind::kReduce:
        if (mb.rows > 0) {
          MoeReduce(ops, moe_context(l), ex, dm);
          ops.Add(dm, hm);
        }
        break;
      case StageKind::kDispatch:
      case StageKind::kCombine:
        break;  // communication stages never reach compute
    }
  };
  auto communicate = [&](const Stage& stage) -> absl::Status {
    MoeExchange& ex = exchanges[static_cast<size_t>(stage.micro_batch)];
    if (stage.kind == StageKind::kDispatch) {
      return MoeDispatch(*comm_, options_.placement.layer(stage.layer).slots_per_rank, ex);
    }
    return MoeCombine(*comm_, ex);
  };
  if (absl::Status s = executor_->Run(schedule_, compute, communicate, &stats_.communication);
      !s.ok()) {
    return s;
  }
  return ComputeLogits(ops, h.mat(), pass.io->final_norm, pass.io->lm_head, batch.logit_rows,
                       c.rms_norm_eps);
}

}  // namespace moeserve
