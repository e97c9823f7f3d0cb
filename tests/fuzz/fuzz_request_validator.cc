// Fuzzes admission: a GenerationRequest with every field drawn from the
// input (any int, float, NaN and infinity, strings of any bytes) against
// limits drawn as well. ValidateRequest must answer with a status, and a
// request it admits must fit the limits it was checked against.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

#include "scheduler/admission/request_validator.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

// Up to 64 elements: enough to cross every count limit drawn below.
constexpr size_t kMaxElements = 64;

float AnyFloat(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange(0, 4)) {
    case 0:
      return std::numeric_limits<float>::quiet_NaN();
    case 1:
      return std::numeric_limits<float>::infinity();
    case 2:
      return -std::numeric_limits<float>::infinity();
    case 3:
      return in.ConsumeFloatingPointInRange(-3.0f, 3.0f);
    default:
      return in.ConsumeFloatingPoint<float>();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using moeserve::fuzz::Require;
  FuzzedDataProvider in(data, size);
  moeserve::RequestLimits limits;
  limits.vocab_size = in.ConsumeIntegralInRange<int64_t>(0, 1 << 20);
  limits.max_context_tokens = in.ConsumeIntegral<int64_t>();
  limits.max_kv_tokens = in.ConsumeIntegral<int64_t>();
  limits.max_logprobs = in.ConsumeIntegralInRange<int32_t>(0, 20);
  limits.max_stop_strings = in.ConsumeIntegralInRange<int32_t>(0, 16);
  limits.max_stop_string_bytes = in.ConsumeIntegralInRange<int32_t>(0, 256);
  limits.max_logit_bias = in.ConsumeIntegralInRange<int32_t>(0, 32);

  moeserve::GenerationRequest r;
  r.request_id = in.ConsumeRandomLengthString(64);
  const size_t prompt = in.ConsumeIntegralInRange<size_t>(0, kMaxElements);
  for (size_t i = 0; i < prompt; ++i) r.prompt_ids.push_back(in.ConsumeIntegral<int32_t>());
  r.sampling.temperature = AnyFloat(in);
  r.sampling.top_p = AnyFloat(in);
  r.sampling.top_k = in.ConsumeIntegral<int32_t>();
  r.sampling.min_p = AnyFloat(in);
  r.sampling.repetition_penalty = AnyFloat(in);
  r.sampling.presence_penalty = AnyFloat(in);
  r.sampling.frequency_penalty = AnyFloat(in);
  if (in.ConsumeBool()) r.sampling.seed = in.ConsumeIntegral<uint64_t>();
  const size_t biases = in.ConsumeIntegralInRange<size_t>(0, kMaxElements);
  for (size_t i = 0; i < biases; ++i) {
    r.sampling.logit_bias.emplace_back(in.ConsumeIntegral<int32_t>(), AnyFloat(in));
  }
  if (in.ConsumeBool()) r.stopping.max_tokens = in.ConsumeIntegral<int64_t>();
  r.stopping.min_tokens = in.ConsumeIntegral<int64_t>();
  const size_t stops = in.ConsumeIntegralInRange<size_t>(0, kMaxElements);
  for (size_t i = 0; i < stops; ++i) r.stopping.stop.push_back(in.ConsumeRandomLengthString(300));
  const size_t stop_ids = in.ConsumeIntegralInRange<size_t>(0, kMaxElements);
  for (size_t i = 0; i < stop_ids; ++i) {
    r.stopping.stop_token_ids.push_back(in.ConsumeIntegral<int32_t>());
  }
  r.stopping.ignore_eos = in.ConsumeBool();
  r.logprobs = in.ConsumeIntegral<int32_t>();
  r.prompt_logprobs = in.ConsumeBool();
  r.priority = in.ConsumeIntegral<int32_t>();

  if (!moeserve::ValidateRequest(limits, r).ok()) return 0;
  // Admitted: the prompt and what it may generate fit the context and the
  // KV cache, and every id is in the vocabulary.
  const auto prompt_tokens = static_cast<int64_t>(r.prompt_ids.size());
  Require(r.stopping.max_tokens.has_value() && *r.stopping.max_tokens >= 1);
  Require(*r.stopping.max_tokens <= limits.max_context_tokens - prompt_tokens);
  if (limits.max_kv_tokens > 0) {
    Require(*r.stopping.max_tokens <= limits.max_kv_tokens - prompt_tokens);
  }
  for (int32_t id : r.prompt_ids) Require(id >= 0 && id < limits.vocab_size);
  return 0;
}
