#include "runtime/worker/step_plan_conversion.h"

#include <cmath>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"

namespace moeserve {
namespace {

namespace pb = ::moeserve::worker::v1;

constexpr uint32_t kMaxInt32 = static_cast<uint32_t>(std::numeric_limits<int32_t>::max());

// Copies unsigned proto ids into the executor's signed ones; `what` names
// the field in the error.
absl::StatusOr<std::vector<int32_t>> ToInt32(
    const google::protobuf::RepeatedField<uint32_t>& values, const char* what) {
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(values.size()));
  for (int i = 0; i < values.size(); ++i) {
    if (values[i] > kMaxInt32) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " ", i, " is ", values[i], ", above ", kMaxInt32));
    }
    out.push_back(static_cast<int32_t>(values[i]));
  }
  return out;
}

}  // namespace

absl::Status CheckStepPlanHeader(const pb::StepPlan& plan, const StepPlanExpectation& expected) {
  if (plan.rank() != expected.rank || plan.world_size() != expected.world_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step ", plan.step(), " is addressed to rank ", plan.rank(), " of ", plan.world_size(),
        ", but this worker is rank ", expected.rank, " of ", expected.world_size));
  }
  if (expected.last_step.has_value() && plan.step() <= *expected.last_step) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step ", plan.step(), " does not follow the last step answered, ", *expected.last_step));
  }
  return absl::OkStatus();
}

absl::StatusOr<SamplingParams> SamplingFromProto(const pb::SequenceWork& work) {
  SamplingParams p;
  if (!work.has_sampling()) return p;
  const pb::Sampling& s = work.sampling();
  if (!(s.temperature() >= 0.0f) || !std::isfinite(s.temperature())) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be finite and >= 0, got ", s.temperature()));
  }
  if (!(s.top_p() > 0.0f && s.top_p() <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", s.top_p()));
  }
  if (s.top_k() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", s.top_k()));
  }
  if (!(s.min_p() >= 0.0f && s.min_p() <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("min_p must be in [0, 1], got ", s.min_p()));
  }
  p.temperature = s.temperature();
  p.top_p = s.top_p();
  p.top_k = s.top_k();
  p.min_p = s.min_p();
  p.seed = s.seed();
  return p;
}

absl::StatusOr<Penalties> PenaltiesFromProto(const pb::SequenceWork& work) {
  Penalties p;
  if (!work.has_sampling()) return p;
  const pb::Sampling& s = work.sampling();
  // 0 is proto3's unset: no repetition penalty.
  if (s.repetition_penalty() != 0.0f) {
    if (!(s.repetition_penalty() > 0.0f) || !std::isfinite(s.repetition_penalty())) {
      return absl::InvalidArgumentError(
          absl::StrCat("repetition_penalty must be finite and > 0, got ", s.repetition_penalty()));
    }
    p.repetition = s.repetition_penalty();
  }
  for (auto [name, v] : {std::pair{"presence_penalty", s.presence_penalty()},
                         {"frequency_penalty", s.frequency_penalty()}}) {
    if (!(v >= -2.0f && v <= 2.0f)) {
      return absl::InvalidArgumentError(absl::StrCat(name, " must be in [-2, 2], got ", v));
    }
  }
  p.presence = s.presence_penalty();
  p.frequency = s.frequency_penalty();
  return p;
}

namespace {

// The fields of `work` that change from step to step (all but the block
// table and what KeptSequences keeps).
absl::Status StepFieldsFromProto(const pb::SequenceWork& work, SequenceWork& w) {
  w.sequence_id = work.sequence_id();
  auto tokens = ToInt32(work.token_ids(), "token");
  if (!tokens.ok()) return tokens.status();
  w.token_ids = *std::move(tokens);
  w.context_len = work.context_len();
  w.sample = work.sample();
  auto history = ToInt32(work.history_token_ids(), "history token");
  if (!history.ok()) return history.status();
  w.history_tokens = *std::move(history);
  w.draw_index = work.draw_index();
  w.prompt_logprobs = work.prompt_logprobs();
  w.following_token.reset();
  if (work.has_following_token()) {
    if (work.following_token() > kMaxInt32) {
      return absl::InvalidArgumentError(
          absl::StrCat("following token ", work.following_token(), " is above ", kMaxInt32));
    }
    w.following_token = static_cast<int32_t>(work.following_token());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SequenceWork> SequenceWorkFromProto(const pb::SequenceWork& work) {
  SequenceWork w;
  if (work.continued()) {
    return absl::InvalidArgumentError(
        "continued work needs what the worker kept of the sequence (KeptSequences)");
  }
  if (absl::Status s = StepFieldsFromProto(work, w); !s.ok()) return s;
  auto blocks = ToInt32(work.block_table(), "block table entry");
  if (!blocks.ok()) return blocks.status();
  w.block_table = *std::move(blocks);
  auto sampling = SamplingFromProto(work);
  if (!sampling.ok()) return sampling.status();
  w.sampling = *sampling;
  auto penalties = PenaltiesFromProto(work);
  if (!penalties.ok()) return penalties.status();
  w.penalties = *penalties;
  if (work.has_sampling()) {
    const pb::Sampling& s = work.sampling();
    if (s.logit_bias_ids_size() != s.logit_bias_values_size()) {
      return absl::InvalidArgumentError(absl::StrCat("logit bias: ", s.logit_bias_ids_size(),
                                                     " ids but ", s.logit_bias_values_size(),
                                                     " values"));
    }
    for (int i = 0; i < s.logit_bias_ids_size(); ++i) {
      const float bias = s.logit_bias_values(i);
      if (s.logit_bias_ids(i) > kMaxInt32 || !(bias >= -100.0f && bias <= 100.0f)) {
        return absl::InvalidArgumentError(
            absl::StrCat("logit bias ", bias, " for token ", s.logit_bias_ids(i),
                         ": ids up to 2^31-1, biases in [-100, 100]"));
      }
      w.logit_bias.emplace_back(static_cast<int32_t>(s.logit_bias_ids(i)), bias);
    }
  }
  w.prompt_tokens = work.prompt_tokens();
  if (work.logprobs() > static_cast<uint32_t>(kMaxTopLogprobs)) {
    return absl::InvalidArgumentError(
        absl::StrCat(work.logprobs(), " top logprobs asked, at most ", kMaxTopLogprobs));
  }
  w.top_logprobs = static_cast<int32_t>(work.logprobs());
  return w;
}

absl::StatusOr<SequenceWork> KeptSequences::Work(const pb::SequenceWork& s) {
  const uint64_t id = s.sequence_id();
  if (!s.continued()) {
    auto w = SequenceWorkFromProto(s);
    if (!w.ok()) {
      kept_.erase(id);
      return w.status();
    }
    SequenceWork& kept = kept_[id];
    kept = *w;
    kept.token_ids.clear();
    kept.history_tokens.clear();
    return w;
  }
  auto it = kept_.find(id);
  if (it == kept_.end()) {
    return absl::InvalidArgumentError(
        "its work continues earlier work this worker does not hold (released, or sent to an "
        "earlier group)");
  }
  SequenceWork& kept = it->second;
  auto appended = ToInt32(s.block_table(), "block table entry");
  if (!appended.ok()) {
    kept_.erase(it);
    return appended.status();
  }
  const size_t size = kept.block_table.size() + appended->size();
  if (size != s.block_table_length()) {
    const size_t held = kept.block_table.size();
    kept_.erase(it);
    return absl::InvalidArgumentError(
        absl::StrCat("its block table would hold ", size, " blocks (", held, " held + ",
                     appended->size(), " appended), but the plan says ", s.block_table_length()));
  }
  kept.block_table.insert(kept.block_table.end(), appended->begin(), appended->end());
  SequenceWork w = kept;
  if (absl::Status st = StepFieldsFromProto(s, w); !st.ok()) {
    kept_.erase(it);
    return st;
  }
  return w;
}

void KeptSequences::Release(std::span<const uint64_t> ids) {
  for (uint64_t id : ids) kept_.erase(id);
}

absl::StatusOr<std::vector<SequenceWork>> StepWorkFromProto(const pb::StepPlan& plan) {
  std::vector<SequenceWork> work;
  work.reserve(static_cast<size_t>(plan.sequences_size()));
  for (const pb::SequenceWork& s : plan.sequences()) {
    auto w = SequenceWorkFromProto(s);
    if (!w.ok()) {
      return absl::Status(w.status().code(),
                          absl::StrCat("sequence ", s.sequence_id(), ": ", w.status().message()));
    }
    work.push_back(*std::move(w));
  }
  return work;
}

pb::SequenceOutput SequenceOutputToProto(const SequenceOutput& output) {
  pb::SequenceOutput out;
  out.set_sequence_id(output.sequence_id);
  if (output.sampled.has_value()) {
    out.set_token_id(static_cast<uint32_t>(output.sampled->id));
    out.set_logprob(output.sampled->logprob);
  }
  for (const TokenLogprob& t : output.top) {
    pb::TokenLogprob* p = out.add_top();
    p->set_id(static_cast<uint32_t>(t.id));
    p->set_logprob(t.logprob);
  }
  out.mutable_prompt_logprobs()->Add(output.prompt_logprobs.begin(), output.prompt_logprobs.end());
  return out;
}

pb::StepResult StepResultToProto(uint64_t step, uint32_t rank,
                                 std::span<const SequenceOutput> outputs, double step_seconds) {
  pb::StepResult result;
  result.set_step(step);
  result.set_rank(rank);
  result.set_step_seconds(step_seconds);
  for (const SequenceOutput& o : outputs) *result.add_outputs() = SequenceOutputToProto(o);
  return result;
}

pb::StepResult FailedStepResult(uint64_t step, uint32_t rank, const absl::Status& error,
                                double step_seconds) {
  pb::StepResult result;
  result.set_step(step);
  result.set_rank(rank);
  result.set_step_seconds(step_seconds);
  result.set_error(error.ToString());
  return result;
}

}  // namespace moeserve
