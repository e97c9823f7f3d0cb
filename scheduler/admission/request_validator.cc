#include "scheduler/admission/request_validator.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace moeserve {
namespace {

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

absl::Status CheckSampling(const RequestLimits& limits, const SamplingOptions& s) {
  if (!(s.temperature >= 0.0f) || std::isinf(s.temperature)) {
    return Invalid(
        absl::StrCat("sampling.temperature must be a finite number >= 0, got ", s.temperature));
  }
  if (!(s.top_p > 0.0f && s.top_p <= 1.0f)) {
    return Invalid(absl::StrCat("sampling.top_p must be in (0, 1], got ", s.top_p));
  }
  if (s.top_k < 0) return Invalid(absl::StrCat("sampling.top_k must be >= 0, got ", s.top_k));
  if (!(s.min_p >= 0.0f && s.min_p <= 1.0f)) {
    return Invalid(absl::StrCat("sampling.min_p must be in [0, 1], got ", s.min_p));
  }
  if (!(s.repetition_penalty > 0.0f) || std::isinf(s.repetition_penalty)) {
    return Invalid(absl::StrCat("sampling.repetition_penalty must be a finite number > 0, got ",
                                s.repetition_penalty));
  }
  for (auto [name, v] : {std::pair{"presence_penalty", s.presence_penalty},
                         {"frequency_penalty", s.frequency_penalty}}) {
    if (!(v >= -2.0f && v <= 2.0f)) {
      return Invalid(absl::StrCat("sampling.", name, " must be in [-2, 2], got ", v));
    }
  }
  if (static_cast<int64_t>(s.logit_bias.size()) > limits.max_logit_bias) {
    return Invalid(absl::StrCat("sampling.logit_bias has ", s.logit_bias.size(),
                                " entries; at most ", limits.max_logit_bias, " are allowed"));
  }
  for (const auto& [id, bias] : s.logit_bias) {
    if (id < 0 || id >= limits.vocab_size) {
      return Invalid(absl::StrCat("sampling.logit_bias: token id ", id,
                                  " is outside the vocabulary [0, ", limits.vocab_size, ")"));
    }
    if (!(bias >= -100.0f && bias <= 100.0f)) {
      return Invalid(
          absl::StrCat("sampling.logit_bias[", id, "] must be in [-100, 100], got ", bias));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckStopping(const RequestLimits& limits, const StoppingOptions& s) {
  if (static_cast<int64_t>(s.stop.size()) > limits.max_stop_strings) {
    return Invalid(absl::StrCat("stopping.stop has ", s.stop.size(), " strings; at most ",
                                limits.max_stop_strings, " are allowed"));
  }
  for (size_t i = 0; i < s.stop.size(); ++i) {
    if (s.stop[i].empty()) return Invalid(absl::StrCat("stopping.stop[", i, "] is empty"));
    if (static_cast<int64_t>(s.stop[i].size()) > limits.max_stop_string_bytes) {
      return Invalid(absl::StrCat("stopping.stop[", i, "] is ", s.stop[i].size(),
                                  " bytes long; at most ", limits.max_stop_string_bytes,
                                  " are allowed"));
    }
  }
  for (int32_t id : s.stop_token_ids) {
    if (id < 0 || id >= limits.vocab_size) {
      return Invalid(absl::StrCat("stopping.stop_token_ids contains ", id,
                                  ", outside the vocabulary [0, ", limits.vocab_size, ")"));
    }
  }
  if (s.min_tokens < 0) return Invalid("stopping.min_tokens must be >= 0");
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateRequest(const RequestLimits& limits, GenerationRequest& r) {
  if (r.prompt_ids.empty()) return Invalid("the prompt is empty");
  for (size_t i = 0; i < r.prompt_ids.size(); ++i) {
    const int32_t id = r.prompt_ids[i];
    if (id < 0 || id >= limits.vocab_size) {
      return Invalid(absl::StrCat("prompt token ", i, " has id ", id,
                                  ", outside the vocabulary [0, ", limits.vocab_size, ")"));
    }
  }
  const auto prompt = static_cast<int64_t>(r.prompt_ids.size());
  if (prompt >= limits.max_context_tokens) {
    return Invalid(absl::StrCat("the prompt has ", prompt, " tokens; the context length is ",
                                limits.max_context_tokens, ", leaving no room to generate"));
  }
  if (r.stopping.max_tokens.has_value()) {
    const int64_t max_tokens = *r.stopping.max_tokens;
    if (max_tokens < 1) {
      return Invalid(absl::StrCat("stopping.max_tokens must be >= 1, got ", max_tokens));
    }
    // prompt < max_context_tokens here, so the difference cannot overflow
    // where prompt + max_tokens could.
    if (max_tokens > limits.max_context_tokens - prompt) {
      return Invalid(absl::StrCat("prompt (", prompt, " tokens) + max_tokens (", max_tokens,
                                  ") exceeds the context length ", limits.max_context_tokens));
    }
  }
  const int64_t kv = limits.max_kv_tokens > 0 ? limits.max_kv_tokens : limits.max_context_tokens;
  if (prompt >= kv) {
    return Invalid(absl::StrCat("the prompt has ", prompt, " tokens; the KV cache holds ", kv,
                                ", leaving no room to generate"));
  }
  if (r.stopping.max_tokens.has_value() && *r.stopping.max_tokens > kv - prompt) {
    return Invalid(absl::StrCat("prompt (", prompt, " tokens) + max_tokens (",
                                *r.stopping.max_tokens, ") exceeds the KV cache capacity of ", kv,
                                " tokens"));
  }
  if (r.logprobs < 0 || r.logprobs > limits.max_logprobs) {
    return Invalid(
        absl::StrCat("logprobs must be in [0, ", limits.max_logprobs, "], got ", r.logprobs));
  }
  if (absl::Status s = CheckSampling(limits, r.sampling); !s.ok()) return s;
  if (absl::Status s = CheckStopping(limits, r.stopping); !s.ok()) return s;
  if (!r.stopping.max_tokens.has_value()) {
    r.stopping.max_tokens = std::min(limits.max_context_tokens, kv) - prompt;
  }
  return absl::OkStatus();
}

}  // namespace moeserve
