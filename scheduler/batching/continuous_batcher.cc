#include "scheduler/batching/continuous_batcher.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "scheduler/batching/admit_waiting.h"
#include "scheduler/batching/kv_reservation.h"
#include "scheduler/batching/token_assignment.h"
#include "scheduler/util/invariant.h"

namespace moeserve::scheduler {
namespace {

constexpr int64_t kMaxBlockSizeTokens = int64_t{1} << 20;

absl::Status CheckPositive(const char* name, int64_t value) {
  if (value > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(name, " must be positive, got ", value));
}

FinishedSequence Usage(const Sequence& seq, FinishReason reason) {
  FinishedSequence f;
  f.id = seq.id;
  f.reason = reason;
  f.num_prompt_tokens = seq.num_prompt_tokens;
  f.num_generated_tokens = seq.num_generated;
  f.num_cached_prompt_tokens = std::max<int64_t>(seq.num_cached_prompt_tokens, 0);
  f.num_preemptions = seq.num_preemptions;
  return f;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ContinuousBatcher>> ContinuousBatcher::Create(
    const Options& options) {
  for (absl::Status s : {CheckPositive("max_batch_tokens", options.max_batch_tokens),
                         CheckPositive("max_running_seqs", options.max_running_seqs),
                         CheckPositive("block_size", options.block_size),
                         CheckPositive("num_blocks", options.num_blocks),
                         CheckPositive("max_waiting", options.max_waiting)}) {
    if (!s.ok()) return s;
  }
  if (options.block_size > kMaxBlockSizeTokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "block_size must be at most ", kMaxBlockSizeTokens, " tokens, got ", options.block_size));
  }
  BlockManager::Options block_options;
  block_options.num_blocks = options.num_blocks;
  block_options.block_size = options.block_size;
  block_options.enable_prefix_caching = options.enable_prefix_caching;
  absl::StatusOr<std::unique_ptr<BlockManager>> blocks = BlockManager::Create(block_options);
  if (!blocks.ok()) return blocks.status();
  return std::unique_ptr<ContinuousBatcher>(new ContinuousBatcher(options, *std::move(blocks)));
}

ContinuousBatcher::ContinuousBatcher(const Options& options, std::unique_ptr<BlockManager> blocks)
    : options_(options), blocks_(std::move(blocks)) {
  running_.reserve(static_cast<size_t>(options_.max_running_seqs));
}

absl::Status ContinuousBatcher::CheckRequest(const Request& r) const {
  if (r.prompt_ids.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("request ", r.id, ": the prompt is empty"));
  }
  if (r.max_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("request ", r.id, ": max tokens must be >= 0, got ", r.max_tokens));
  }
  if (static_cast<int64_t>(r.generated_ids.size()) >= std::max<int64_t>(r.max_tokens, 1)) {
    return absl::InvalidArgumentError(absl::StrCat("request ", r.id, ": it already generated ",
                                                   r.generated_ids.size(), " of its ", r.max_tokens,
                                                   " tokens; nothing is left to run"));
  }
  // The last generated token is never fed back, so its KV is never stored.
  const int64_t capacity_tokens = blocks_->num_blocks() * blocks_->block_size();
  const auto prompt = static_cast<int64_t>(r.prompt_ids.size());
  const int64_t generated_stored = std::max<int64_t>(r.max_tokens - 1, 0);
  if (prompt > capacity_tokens || generated_stored > capacity_tokens - prompt) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request ", r.id, ": prompt (", prompt, " tokens) + max tokens (", r.max_tokens,
        ") can never fit in the KV cache of ", blocks_->num_blocks(), " blocks of ",
        blocks_->block_size(), " tokens (", capacity_tokens, " tokens)"));
  }
  if (seqs_.contains(r.id)) {
    return absl::AlreadyExistsError(absl::StrCat("request ", r.id, " is already running"));
  }
  return absl::OkStatus();
}

absl::Status ContinuousBatcher::Add(Request request) {
  if (absl::Status s = CheckRequest(request); !s.ok()) return s;
  if (waiting_.size() >= options_.max_waiting) {
    return absl::ResourceExhaustedError(
        absl::StrCat("waiting queue is full: ", waiting_.size(),
                     " requests wait (max_waiting = ", options_.max_waiting, ")"));
  }
  auto seq = std::make_unique<Sequence>();
  seq->id = request.id;
  seq->priority = request.priority;
  seq->arrival = next_arrival_++;
  seq->num_prompt_tokens = static_cast<int64_t>(request.prompt_ids.size());
  seq->tokens = std::move(request.prompt_ids);
  seq->tokens.insert(seq->tokens.end(), request.generated_ids.begin(), request.generated_ids.end());
  seq->num_generated = static_cast<int64_t>(request.generated_ids.size());
  seq->max_tokens = request.max_tokens;
  waiting_.Push(seq.get());
  seqs_.emplace(request.id, std::move(seq));
  return absl::OkStatus();
}

StepPlan ContinuousBatcher::Schedule() {
  StepPlan plan;
  Schedule(&plan);
  return plan;
}

void ContinuousBatcher::Schedule(StepPlan* plan) {
  CheckInvariant(!step_in_flight_, "Schedule called while a step is in flight");
  plan->step = 0;
  plan->preempted.clear();
  const int64_t budget =
      options_.max_batch_tokens - AssignRunningTokens(running_, options_.max_batch_tokens);
  std::vector<Sequence*> preempted;
  ReserveRunningBlocks(*blocks_, running_, &preempted);
  for (Sequence* seq : preempted) {
    waiting_.Push(seq);
    plan->preempted.push_back(seq->id);
  }
  num_preemptions_ += static_cast<int64_t>(preempted.size());
  // After a preemption the blocks are short: admitting now would only thrash.
  if (preempted.empty()) {
    AdmitWaiting(*blocks_, waiting_, running_, budget, options_.max_running_seqs);
  }
  BuildStepPlan(running_, *blocks_, plan, &in_flight_);
  if (plan->empty()) return;
  plan->step = ++step_;
  step_in_flight_ = true;
  num_sampled_in_flight_ = std::count_if(in_flight_.begin(), in_flight_.end(),
                                         [](const Sequence* s) { return s->sample; });
}

absl::Status ContinuousBatcher::MatchOutputs(const StepResult& result) {
  ++output_epoch_;
  int64_t matched = 0;
  for (size_t i = 0; i < result.outputs.size(); ++i) {
    const uint64_t id = result.outputs[i].id;
    auto it = seqs_.find(id);
    Sequence* seq = it == seqs_.end() ? nullptr : it->second.get();
    if (seq == nullptr || !seq->sample) {
      const bool aborted = std::any_of(aborted_in_flight_.begin(), aborted_in_flight_.end(),
                                       [&](const auto& s) { return s->id == id; });
      if (aborted) continue;
      return absl::InvalidArgumentError(absl::StrCat("step ", step_, ": output for sequence ", id,
                                                     ", which this step does not sample"));
    }
    if (seq->output_epoch == output_epoch_) {
      return absl::InvalidArgumentError(
          absl::StrCat("step ", step_, ": two outputs for sequence ", id));
    }
    seq->output_epoch = output_epoch_;
    seq->output_index = static_cast<int64_t>(i);
    ++matched;
  }
  if (matched == num_sampled_in_flight_) return absl::OkStatus();
  for (const Sequence* seq : in_flight_) {
    if (!seq->aborted && seq->sample && seq->output_epoch != output_epoch_) {
      return absl::InvalidArgumentError(
          absl::StrCat("step ", step_, ": no output for sequence ", seq->id, " (",
                       num_sampled_in_flight_ - matched, " of ", num_sampled_in_flight_,
                       " sampled sequences missing)"));
    }
  }
  CheckInvariant(false, "sampled sequences miscounted");
  return absl::InternalError("unreachable");
}

absl::StatusOr<std::vector<FinishedSequence>> ContinuousBatcher::OnStepResult(
    const StepResult& result) {
  if (!step_in_flight_) {
    return absl::FailedPreconditionError(
        absl::StrCat("result for step ", result.step, " but no step is in flight"));
  }
  if (result.step != step_) {
    return absl::InvalidArgumentError(
        absl::StrCat("result for step ", result.step, " but step ", step_, " is in flight"));
  }
  if (absl::Status s = MatchOutputs(result); !s.ok()) return s;
  std::vector<FinishedSequence> finished;
  const int64_t bs = blocks_->block_size();
  for (Sequence* seq : in_flight_) {
    if (seq->aborted) continue;
    const int64_t full_blocks_before = seq->num_computed / bs;
    seq->num_computed += seq->num_scheduled;
    seq->num_scheduled = 0;
    bool stop = false;
    if (seq->sample) {
      const SequenceOutput& out = result.outputs[static_cast<size_t>(seq->output_index)];
      seq->tokens.push_back(out.token);
      ++seq->num_generated;
      stop = out.finished;
      seq->sample = false;
    }
    if (seq->num_computed / bs > full_blocks_before) {
      blocks_->CacheComputedBlocks(seq->id, seq->tokens, seq->num_computed);
    }
    const bool length = seq->num_generated >= seq->max_tokens &&
                        (seq->num_generated > 0 || seq->num_uncomputed() == 0);
    if (stop || length) {
      finished.push_back(Finish(*seq, stop ? FinishReason::kStop : FinishReason::kLength));
    }
  }
  if (!finished.empty()) RemoveFinished();
  in_flight_.clear();
  aborted_in_flight_.clear();
  step_in_flight_ = false;
  num_sampled_in_flight_ = 0;
  return finished;
}

FinishedSequence ContinuousBatcher::Finish(Sequence& seq, FinishReason reason) {
  CheckInvariant(blocks_->Free(seq.id).ok(), "a running sequence holds no KV blocks");
  seq.finished = true;
  return Usage(seq, reason);
}

void ContinuousBatcher::RemoveFinished() {
  std::erase_if(running_, [this](Sequence* seq) {
    if (!seq->finished) return false;
    seqs_.erase(seq->id);
    return true;
  });
}

absl::StatusOr<FinishedSequence> ContinuousBatcher::Abort(uint64_t id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) {
    return absl::NotFoundError(absl::StrCat("no unfinished request ", id));
  }
  Sequence& seq = *it->second;
  const FinishedSequence usage = Usage(seq, FinishReason::kAborted);
  if (!waiting_.Erase(&seq)) {
    CheckInvariant(blocks_->Free(id).ok(), "a running sequence holds no KV blocks");
    running_.erase(std::find(running_.begin(), running_.end(), &seq));
    if (step_in_flight_ && seq.num_scheduled > 0) {
      seq.aborted = true;
      if (seq.sample) --num_sampled_in_flight_;
      seq.sample = false;
      aborted_in_flight_.push_back(std::move(it->second));
    }
  }
  seqs_.erase(it);
  return usage;
}

ContinuousBatcher::Stats ContinuousBatcher::stats() const {
  Stats s;
  s.num_running = static_cast<int64_t>(running_.size());
  s.num_waiting = waiting_.size();
  s.kv_usage_ratio = blocks_->usage_ratio();
  s.num_free_blocks = blocks_->num_free_blocks();
  s.prefix_cache_queried_tokens = blocks_->prefix_cache_stats().queried_tokens;
  s.prefix_cache_hit_tokens = blocks_->prefix_cache_stats().hit_tokens;
  s.num_preemptions = num_preemptions_;
  return s;
}

}  // namespace moeserve::scheduler
