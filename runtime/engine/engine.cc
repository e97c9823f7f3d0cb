#include "runtime/engine/engine.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_ops.h"

namespace moeserve {

struct Engine::Sequence {
  const GenerateRequest* request = nullptr;
  GenerateResult* result = nullptr;
  std::vector<int32_t> tokens;  // prompt, then generated
  int64_t cached = 0;           // tokens whose keys are in the KV cache
  std::vector<int32_t> blocks;
  bool done = false;
};

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  if (options.max_batch_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max batch tokens must be positive, got ", options.max_batch_tokens));
  }
  auto engine = std::unique_ptr<Engine>(new Engine());
  engine->options_ = options;
  engine->ops_ = CreateCpuOps();
  auto checkpoint = Checkpoint::Open(options.model_dir);
  if (!checkpoint.ok()) return checkpoint.status();
  engine->checkpoint_ = *std::move(checkpoint);
  auto model = LoadModel(*engine->checkpoint_, WeightSelection{}, *engine->ops_, options.model);
  if (!model.ok()) return model.status();
  engine->model_ = *std::move(model);
  const ModelConfig& c = engine->model_->config();
  PagedKvCache::Options cache_options;
  cache_options.num_layers = c.num_hidden_layers;
  cache_options.block_size = options.kv_block_tokens;
  cache_options.num_blocks =
      CeilDiv(options.kv_cache_tokens, std::max<int64_t>(1, options.kv_block_tokens));
  cache_options.width = c.kv_cache_width();
  auto cache = PagedKvCache::Create(cache_options);
  if (!cache.ok()) return cache.status();
  engine->cache_ = *std::move(cache);
  engine->blocks_ = std::make_unique<BlockAllocator>(cache_options.num_blocks);
  return engine;
}

absl::Status Engine::CheckRequest(const GenerateRequest& r, size_t index) const {
  const ModelConfig& c = config();
  const std::string where = absl::StrCat("request ", index, ": ");
  if (r.prompt_ids.empty()) return absl::InvalidArgumentError(where + "the prompt is empty");
  for (size_t i = 0; i < r.prompt_ids.size(); ++i) {
    if (r.prompt_ids[i] < 0 || r.prompt_ids[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "prompt token ", i, " has id ", r.prompt_ids[i],
                       ", outside the vocabulary [0, ", c.vocab_size, ")"));
    }
  }
  if (r.max_tokens < 0) return absl::InvalidArgumentError(where + "max tokens is negative");
  const int64_t total = static_cast<int64_t>(r.prompt_ids.size()) + r.max_tokens;
  if (total > c.max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "prompt (", r.prompt_ids.size(), ") + max tokens (", r.max_tokens,
                     ") exceeds the context length ", c.max_position_embeddings));
  }
  const SamplingParams& s = r.sampling;
  if (!(s.temperature >= 0.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "temperature must be >= 0, got ", s.temperature));
  }
  if (!(s.top_p > 0.0f && s.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "top-p must be in (0, 1], got ", s.top_p));
  }
  if (s.top_k < 0)
    return absl::InvalidArgumentError(absl::StrCat(where, "top-k must be >= 0, got ", s.top_k));
  if (!(s.min_p >= 0.0f && s.min_p <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "min-p must be in [0, 1], got ", s.min_p));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<GenerateResult>> Engine::Generate(
    std::span<const GenerateRequest> requests) {
  for (size_t i = 0; i < requests.size(); ++i) {
    if (absl::Status s = CheckRequest(requests[i], i); !s.ok()) return s;
  }
  std::vector<GenerateResult> results(requests.size());
  std::vector<Sequence> seqs(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    seqs[i].request = &requests[i];
    seqs[i].result = &results[i];
    seqs[i].tokens = requests[i].prompt_ids;
    seqs[i].done = requests[i].max_tokens == 0 && !requests[i].prompt_logprobs;
    if (requests[i].prompt_logprobs) {
      results[i].prompt_logprobs.resize(requests[i].prompt_ids.size());
    }
  }
  absl::Status status;
  while (status.ok() &&
         std::any_of(seqs.begin(), seqs.end(), [](const Sequence& s) { return !s.done; })) {
    status = Step(seqs);
  }
  for (Sequence& s : seqs) {
    for (int32_t b : s.blocks) blocks_->Free(b);
  }
  if (!status.ok()) return status;
  return results;
}

absl::Status Engine::Step(std::vector<Sequence>& seqs) {
  ForwardBatch batch;
  struct Work {
    Sequence* seq;
    int64_t first_row;
    int64_t num_tokens;
  };
  std::vector<Work> work;
  int64_t budget = options_.max_batch_tokens;
  // Decode tokens first (one each), then prefill chunks in arrival order.
  std::vector<Sequence*> order;
  for (Sequence& s : seqs) {
    if (!s.done && static_cast<int64_t>(s.tokens.size()) - s.cached == 1) order.push_back(&s);
  }
  for (Sequence& s : seqs) {
    if (!s.done && static_cast<int64_t>(s.tokens.size()) - s.cached > 1) order.push_back(&s);
  }
  const int64_t block_size = cache_->options().block_size;
  for (Sequence* s : order) {
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(s->tokens.size()) - s->cached, budget);
    if (n <= 0) break;
    while (static_cast<int64_t>(s->blocks.size()) * block_size < s->cached + n) {
      auto block = blocks_->Allocate();
      if (!block.ok()) return block.status();
      s->blocks.push_back(*block);
    }
    SeqSlice slice;
    slice.token_begin = static_cast<int64_t>(batch.tokens.size());
    slice.num_tokens = n;
    slice.context_len = s->cached + n;
    slice.block_table = s->blocks;
    batch.seqs.push_back(slice);
    batch.tokens.insert(batch.tokens.end(), s->tokens.begin() + s->cached,
                        s->tokens.begin() + s->cached + n);
    work.push_back({s, slice.token_begin, n});
    budget -= n;
  }

  // Logit rows: prompt positions whose next token is in the prompt (for
  // prompt logprobs), and the last row of every sequence that reached the end
  // of its tokens (to sample).
  struct Need {
    Sequence* seq;
    int64_t position;  // position of the row's token
    bool sample;
  };
  std::vector<Need> needs;
  for (const Work& w : work) {
    const int64_t prompt_len = static_cast<int64_t>(w.seq->request->prompt_ids.size());
    for (int64_t j = 0; j < w.num_tokens; ++j) {
      const int64_t pos = w.seq->cached + j;
      const bool is_last = pos + 1 == static_cast<int64_t>(w.seq->tokens.size());
      const bool for_prompt = w.seq->request->prompt_logprobs && pos + 1 < prompt_len;
      const bool sample = is_last && w.seq->request->max_tokens > 0;
      if (for_prompt || sample) {
        batch.logit_rows.push_back(w.first_row + j);
        needs.push_back({w.seq, pos, sample});
      }
    }
  }

  auto logits = model_->Forward(batch, *cache_);
  if (!logits.ok()) return logits.status();
  for (const Work& w : work) w.seq->cached += w.num_tokens;

  Tensor logprobs = Tensor::Empty(DType::kF32, logits->shape());
  if (!needs.empty()) ops_->LogSoftmax(logits->mat(), logprobs.mat());
  std::vector<int32_t> sample_rows;
  std::vector<SamplingParams> params;
  std::vector<uint64_t> draws;
  for (size_t i = 0; i < needs.size(); ++i) {
    const Need& n = needs[i];
    const auto& prompt = n.seq->request->prompt_ids;
    if (n.seq->request->prompt_logprobs && n.position + 1 < static_cast<int64_t>(prompt.size())) {
      const int32_t next = prompt[static_cast<size_t>(n.position + 1)];
      n.seq->result->prompt_logprobs[static_cast<size_t>(n.position + 1)] =
          logprobs.mat().row(static_cast<int64_t>(i))[next];
    }
    if (n.sample) {
      sample_rows.push_back(static_cast<int32_t>(i));
      params.push_back(n.seq->request->sampling);
      draws.push_back(n.seq->result->tokens.size());
    }
  }
  for (const Work& w : work) {
    // A prompt-logprobs-only request (max_tokens 0) is done once its prompt is read.
    if (w.seq->request->max_tokens == 0 &&
        w.seq->cached == static_cast<int64_t>(w.seq->tokens.size())) {
      w.seq->done = true;
    }
  }
  if (sample_rows.empty()) return absl::OkStatus();

  const auto n = static_cast<int64_t>(sample_rows.size());
  Tensor picked = Tensor::Empty(DType::kF32, {n, logits->dim(1)});
  ops_->GatherRows(logits->mat(), sample_rows, picked.mat());
  std::vector<int32_t> ids(static_cast<size_t>(n));
  std::vector<float> lps(static_cast<size_t>(n));
  ops_->Sample(picked.mat(), params, draws, ids, lps);
  size_t k = 0;
  for (const Need& need : needs) {
    if (!need.sample) continue;
    Sequence& s = *need.seq;
    s.result->tokens.push_back({ids[k], lps[k]});
    s.tokens.push_back(ids[k]);
    ++k;
    if (!s.request->ignore_eos && config().IsEos(s.tokens.back())) {
      s.result->finish_reason = FinishReason::kStop;
      s.done = true;
    } else if (static_cast<int64_t>(s.result->tokens.size()) >= s.request->max_tokens) {
      s.result->finish_reason = FinishReason::kLength;
      s.done = true;
    }
  }
  return absl::OkStatus();
}

}  // namespace moeserve
