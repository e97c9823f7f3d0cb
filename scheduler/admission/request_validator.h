// Admission checks of a request against the served model's limits. Pure: no
// I/O, no state. Every failure is InvalidArgument with a message that names
// the field and the value, fit to send to the client as is; sampling
// penalties, not implemented yet, are Unimplemented.
#ifndef MOESERVE_SCHEDULER_ADMISSION_REQUEST_VALIDATOR_H_
#define MOESERVE_SCHEDULER_ADMISSION_REQUEST_VALIDATOR_H_

#include <cstdint>

#include "absl/status/status.h"
#include "scheduler/admission/generation_request.h"

namespace moeserve {

struct RequestLimits {
  int64_t vocab_size = 0;
  int64_t max_context_tokens = 0;  // prompt + max_tokens may not exceed this
  int64_t max_kv_tokens = 0;       // ...nor the KV cache's capacity; 0: unknown
  int32_t max_logprobs = 20;
  int32_t max_stop_strings = 16;
  int32_t max_stop_string_bytes = 256;
  int32_t max_logit_bias = 1024;  // entries of sampling.logit_bias
};

// Checks `request` and fills its defaults (max_tokens: the rest of the
// context, or of the KV cache when smaller). Leaves it untouched on error.
absl::Status ValidateRequest(const RequestLimits& limits, GenerationRequest& request);

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_ADMISSION_REQUEST_VALIDATOR_H_
