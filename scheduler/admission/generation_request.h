// A generation request as the API layer admits it: plain data, no proto. The
// API layer turns moeserve.v1.GenerateRequest into this, validates it with
// ValidateRequest, and hands it to the engine loop.
#ifndef MOESERVE_SCHEDULER_ADMISSION_GENERATION_REQUEST_H_
#define MOESERVE_SCHEDULER_ADMISSION_GENERATION_REQUEST_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace moeserve {

struct SamplingOptions {
  float temperature = 1.0f;  // 0: greedy
  float top_p = 1.0f;
  int32_t top_k = 0;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::optional<uint64_t> seed;  // unset: the server picks one
  std::vector<std::pair<int32_t, float>> logit_bias;  // ascending token id
};

struct StoppingOptions {
  std::optional<int64_t> max_tokens;  // unset: the rest of the context
  int64_t min_tokens = 0;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
};

struct GenerationRequest {
  std::string request_id;
  std::vector<int32_t> prompt_ids;
  SamplingOptions sampling;
  StoppingOptions stopping;
  int32_t logprobs = 0;  // alternatives per generated token
  bool prompt_logprobs = false;
  int32_t priority = 0;
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_ADMISSION_GENERATION_REQUEST_H_
