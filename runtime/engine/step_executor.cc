#include "runtime/engine/step_executor.h"

#include <algorithm>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moeserve {
namespace {

// A batch row whose logits are needed, and why.
struct LogitRow {
  size_t work;         // index into the step's work
  int64_t row;         // batch row
  int32_t next_token;  // prompt logprob of this token, or -1
  bool sample;
};

std::vector<TokenLogprob> TopLogprobs(const float* logprobs, int64_t vocab, int32_t k) {
  std::vector<int32_t> ids(static_cast<size_t>(vocab));
  std::iota(ids.begin(), ids.end(), 0);
  const auto n = static_cast<size_t>(std::min<int64_t>(k, vocab));
  std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n), ids.end(),
                    [&](int32_t a, int32_t b) {
                      return logprobs[a] > logprobs[b] || (logprobs[a] == logprobs[b] && a < b);
                    });
  std::vector<TokenLogprob> top;
  for (size_t i = 0; i < n; ++i) top.push_back({ids[i], logprobs[ids[i]]});
  return top;
}

}  // namespace

void ApplyPenalties(const Penalties& p, const std::unordered_set<int32_t>& prompt,
                    const std::unordered_map<int32_t, int32_t>& generated,
                    std::span<float> logits) {
  auto inside = [&](int32_t t) { return t >= 0 && static_cast<size_t>(t) < logits.size(); };
  auto repeat = [&](int32_t t) {
    if (!inside(t)) return;
    float& l = logits[static_cast<size_t>(t)];
    l = l > 0.0f ? l / p.repetition : l * p.repetition;
  };
  if (p.repetition != 1.0f) {
    for (int32_t t : prompt) repeat(t);
    for (const auto& [t, n] : generated) {
      if (!prompt.contains(t)) repeat(t);
    }
  }
  for (const auto& [t, n] : generated) {
    if (inside(t))
      logits[static_cast<size_t>(t)] -= p.presence + p.frequency * static_cast<float>(n);
  }
}

absl::Status StepExecutor::CheckSampling(const SequenceWork& w) const {
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("sequence ", w.sequence_id, ": ", what));
  };
  const int64_t vocab = model_.config().vocab_size;
  for (const auto& [id, bias] : w.logit_bias) {
    if (id < 0 || id >= vocab) {
      return bad(absl::StrCat("logit bias for token ", id, ", outside the vocabulary"));
    }
  }
  if (!w.penalties.active()) return absl::OkStatus();
  if (!(w.penalties.repetition > 0.0f)) {
    return bad(absl::StrCat("repetition penalty must be > 0, got ", w.penalties.repetition));
  }
  for (int32_t t : w.history_tokens) {
    if (t < 0 || t >= vocab) {
      return bad(absl::StrCat("history token ", t, " is outside the vocabulary"));
    }
  }
  const int64_t first = w.context_len - static_cast<int64_t>(w.token_ids.size());
  if (!w.history_tokens.empty() && static_cast<int64_t>(w.history_tokens.size()) != first) {
    return bad(absl::StrCat(w.history_tokens.size(),
                            " history tokens for a chunk that starts at position ", first));
  }
  if (first > 0 && w.history_tokens.empty()) {
    auto it = history_.find(w.sequence_id);
    if (it == history_.end() || it->second.next_position != first) {
      return bad(absl::StrCat(
          "its penalties need the tokens before position ", first, ", which this worker has ",
          it == history_.end() ? "not seen"
                               : absl::StrCat("seen up to ", it->second.next_position)));
    }
  }
  return absl::OkStatus();
}

absl::Status StepExecutor::Check(const SequenceWork& w) const {
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("sequence ", w.sequence_id, ": ", what));
  };
  if (w.top_logprobs < 0 || w.top_logprobs > kMaxTopLogprobs) {
    return bad(absl::StrCat(w.top_logprobs, " top logprobs asked, at most ", kMaxTopLogprobs));
  }
  const int64_t vocab = model_.config().vocab_size;
  if (w.following_token.has_value() && (*w.following_token < 0 || *w.following_token >= vocab)) {
    return bad(absl::StrCat("following token ", *w.following_token, " is outside the vocabulary"));
  }
  ForwardBatch batch;
  batch.tokens = w.token_ids;
  SeqSlice slice;
  slice.num_tokens = static_cast<int64_t>(w.token_ids.size());
  slice.context_len = w.context_len;
  slice.block_table = w.block_table;
  batch.seqs.push_back(slice);
  if (absl::Status s = ValidateBatch(batch, model_.config(), cache_); !s.ok()) {
    return bad(std::string(s.message()));
  }
  return CheckSampling(w);
}

void StepExecutor::Release(std::span<const uint64_t> ids) {
  for (uint64_t id : ids) history_.erase(id);
}

absl::Status StepExecutor::Record(const SequenceWork& w) {
  // CheckSampling passed: the history reaches the chunk, or starts over.
  const int64_t first = w.context_len - static_cast<int64_t>(w.token_ids.size());
  auto it = first == 0 || !w.history_tokens.empty()
                ? history_.insert_or_assign(w.sequence_id, History{}).first
                : history_.find(w.sequence_id);
  History& h = it->second;
  const int64_t vocab = model_.config().vocab_size;
  auto add = [&](int64_t position, int32_t t) {
    if (t < 0 || t >= vocab) return false;
    if (position < w.prompt_tokens) {
      h.prompt.insert(t);
    } else {
      ++h.generated[t];
    }
    return true;
  };
  bool inside = true;
  for (size_t j = 0; j < w.history_tokens.size() && inside; ++j) {
    inside = add(static_cast<int64_t>(j), w.history_tokens[j]);
  }
  for (size_t j = 0; j < w.token_ids.size() && inside; ++j) {
    inside = add(first + static_cast<int64_t>(j), w.token_ids[j]);
  }
  if (!inside) {
    history_.erase(it);
    return absl::InvalidArgumentError(
        absl::StrCat("sequence ", w.sequence_id, ": a token is outside the vocabulary"));
  }
  h.next_position = w.context_len;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SequenceOutput>> StepExecutor::Run(std::span<const SequenceWork> work,
                                                              int64_t group_max_tokens) {
  reached_forward_ = false;
  ForwardBatch batch;
  batch.group_max_tokens = group_max_tokens;
  std::vector<LogitRow> rows;
  for (size_t i = 0; i < work.size(); ++i) {
    const SequenceWork& w = work[i];
    if (w.top_logprobs < 0 || w.top_logprobs > kMaxTopLogprobs) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", w.sequence_id, ": ", w.top_logprobs,
                       " top logprobs asked, at most ", kMaxTopLogprobs));
    }
    SeqSlice slice;
    slice.token_begin = static_cast<int64_t>(batch.tokens.size());
    slice.num_tokens = static_cast<int64_t>(w.token_ids.size());
    slice.context_len = w.context_len;
    slice.block_table = w.block_table;
    batch.seqs.push_back(slice);
    batch.tokens.insert(batch.tokens.end(), w.token_ids.begin(), w.token_ids.end());
    for (int64_t j = 0; j < slice.num_tokens; ++j) {
      const bool last = j + 1 == slice.num_tokens;
      int32_t next = -1;
      if (w.prompt_logprobs) {
        if (!last) {
          next = w.token_ids[static_cast<size_t>(j + 1)];
        } else if (w.following_token.has_value()) {
          next = *w.following_token;
        }
      }
      const bool sample = last && w.sample;
      if (next >= 0 || sample) rows.push_back({i, slice.token_begin + j, next, sample});
    }
  }
  for (const LogitRow& r : rows) {
    if (r.next_token >= model_.config().vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("following token ", r.next_token, " is outside the vocabulary"));
    }
    batch.logit_rows.push_back(r.row);
  }
  for (const SequenceWork& w : work) {
    if (absl::Status s = CheckSampling(w); !s.ok()) return s;
  }
  for (const SequenceWork& w : work) {
    if (!w.penalties.active()) continue;
    if (absl::Status s = Record(w); !s.ok()) return s;
  }

  reached_forward_ = true;
  auto logits = model_.Forward(batch, cache_);
  if (!logits.ok()) return logits.status();
  std::vector<SequenceOutput> outputs(work.size());
  for (size_t i = 0; i < work.size(); ++i) outputs[i].sequence_id = work[i].sequence_id;
  if (rows.empty()) return outputs;

  const int64_t vocab = logits->dim(1);
  // Log-probabilities one row at a time, and only for rows that report one
  // (a prompt position, or alternatives of a sampled token): one row of
  // scratch, not a second [rows, vocab] matrix beside the logits (1 GB for
  // the prompt log-probabilities of a 2,048-token chunk at a 129k vocabulary).
  Tensor row_logprobs = Tensor::Empty(DType::kF32, {1, vocab});
  std::vector<int32_t> sample_rows;
  std::vector<SamplingParams> params;
  std::vector<uint64_t> draws;
  for (size_t k = 0; k < rows.size(); ++k) {
    const LogitRow& r = rows[k];
    const bool top = r.sample && work[r.work].top_logprobs > 0;
    if (r.next_token >= 0 || top) {
      ops_.LogSoftmax(logits->mat().Rows(static_cast<int64_t>(k), 1), row_logprobs.mat());
      const float* lp = row_logprobs.f32();
      if (r.next_token >= 0) outputs[r.work].prompt_logprobs.push_back(lp[r.next_token]);
      if (top) outputs[r.work].top = TopLogprobs(lp, vocab, work[r.work].top_logprobs);
    }
    if (r.sample) {
      sample_rows.push_back(static_cast<int32_t>(k));
      params.push_back(work[r.work].sampling);
      draws.push_back(work[r.work].draw_index);
    }
  }
  if (sample_rows.empty()) return outputs;

  const auto n = static_cast<int64_t>(sample_rows.size());
  Tensor picked = Tensor::Empty(DType::kF32, {n, vocab});
  ops_.GatherRows(logits->mat(), sample_rows, picked.mat());
  // Penalties and logit biases change what is drawn, not the reported
  // log-probability: that of the chosen token under the model's own
  // distribution, from the row before them.
  std::vector<size_t> penalized;  // sample indices
  for (size_t i = 0; i < sample_rows.size(); ++i) {
    const SequenceWork& w = work[rows[static_cast<size_t>(sample_rows[i])].work];
    if (!w.penalties.active() && w.logit_bias.empty()) continue;
    float* row = picked.mat().row(static_cast<int64_t>(i));
    if (w.penalties.active()) {
      const History& h = history_.at(w.sequence_id);
      ApplyPenalties(w.penalties, h.prompt, h.generated,
                     std::span<float>(row, static_cast<size_t>(vocab)));
    }
    for (const auto& [id, bias] : w.logit_bias) row[id] += bias;
    penalized.push_back(i);
  }
  std::vector<int32_t> ids(static_cast<size_t>(n));
  std::vector<float> chosen(static_cast<size_t>(n));
  ops_.Sample(picked.mat(), params, draws, ids, chosen);
  for (size_t i : penalized) {
    ops_.LogSoftmax(logits->mat().Rows(sample_rows[i], 1), row_logprobs.mat());
    chosen[i] = row_logprobs.f32()[ids[i]];
  }
  size_t s = 0;
  for (const LogitRow& r : rows) {
    if (!r.sample) continue;
    outputs[r.work].sampled = TokenLogprob{ids[s], chosen[s]};
    ++s;
  }
  return outputs;
}

}  // namespace moeserve
