#include "runtime/engine/engine.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

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
  ModelOptions model = options.model;
  model.max_batch_tokens = options.max_batch_tokens;  // the step workspace's plan
  auto runner =
      ModelRunner::Create({options.model_dir, options.kv_cache_tokens, options.kv_block_tokens,
                           model, options.kv_cache_dtype, options.device});
  if (!runner.ok()) return runner.status();
  engine->runner_ = *std::move(runner);
  engine->blocks_ = std::make_unique<BlockAllocator>(engine->runner_->cache().options().num_blocks);
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
  // Decode tokens first (one each), then prefill chunks in arrival order,
  // within the step's token budget.
  std::vector<Sequence*> order;
  for (Sequence& s : seqs) {
    if (!s.done && static_cast<int64_t>(s.tokens.size()) - s.cached == 1) order.push_back(&s);
  }
  for (Sequence& s : seqs) {
    if (!s.done && static_cast<int64_t>(s.tokens.size()) - s.cached > 1) order.push_back(&s);
  }
  std::vector<SequenceWork> work;
  std::vector<Sequence*> scheduled;
  int64_t budget = options_.max_batch_tokens;
  const int64_t block_size = runner_->cache().options().block_size;
  for (Sequence* s : order) {
    const auto known = static_cast<int64_t>(s->tokens.size());
    const int64_t n = std::min<int64_t>(known - s->cached, budget);
    if (n <= 0) break;
    while (static_cast<int64_t>(s->blocks.size()) * block_size < s->cached + n) {
      auto block = blocks_->Allocate();
      if (!block.ok()) return block.status();
      s->blocks.push_back(*block);
    }
    const auto prompt_len = static_cast<int64_t>(s->request->prompt_ids.size());
    SequenceWork w;
    w.sequence_id = scheduled.size();
    w.token_ids.assign(s->tokens.begin() + s->cached, s->tokens.begin() + s->cached + n);
    w.context_len = s->cached + n;
    w.block_table = s->blocks;
    w.sample = w.context_len == known && s->request->max_tokens > 0;
    w.sampling = s->request->sampling;
    w.draw_index = s->result->tokens.size();
    w.prompt_logprobs = s->request->prompt_logprobs && s->cached < prompt_len;
    if (w.context_len < prompt_len)
      w.following_token = s->tokens[static_cast<size_t>(w.context_len)];
    work.push_back(std::move(w));
    scheduled.push_back(s);
    budget -= n;
  }

  auto outputs = runner_->executor().Run(work);
  if (!outputs.ok()) return outputs.status();
  for (size_t i = 0; i < scheduled.size(); ++i) {
    Sequence& s = *scheduled[i];
    const SequenceOutput& out = (*outputs)[i];
    for (size_t j = 0; j < out.prompt_logprobs.size(); ++j) {
      s.result->prompt_logprobs[static_cast<size_t>(s.cached) + j + 1] = out.prompt_logprobs[j];
    }
    s.cached = work[i].context_len;
    if (out.sampled.has_value()) {
      s.result->tokens.push_back({out.sampled->id, out.sampled->logprob});
      s.tokens.push_back(out.sampled->id);
    }
    const bool prompt_read = s.cached >= static_cast<int64_t>(s.request->prompt_ids.size());
    if (s.request->max_tokens == 0 && prompt_read) {
      s.done = true;  // prompt logprobs only
    } else if (out.sampled.has_value()) {
      if (!s.request->ignore_eos && config().IsEos(out.sampled->id)) {
        s.result->finish_reason = FinishReason::kStop;
        s.done = true;
      } else if (static_cast<int64_t>(s.result->tokens.size()) >= s.request->max_tokens) {
        s.result->finish_reason = FinishReason::kLength;
        s.done = true;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace moeserve
