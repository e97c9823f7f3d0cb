// Fuzzes OpenAI request bodies: the first byte picks the endpoint (even:
// /v1/chat/completions, odd: /v1/completions), the rest is the body.
// ParseOpenAiRequest must answer with a status; a request it accepts must be
// within the bounds its header promises.
#include <cstddef>
#include <cstdint>
#include <string>

#include "scheduler/server/openai_protocol.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using moeserve::fuzz::Require;
  if (size == 0) return 0;
  const auto endpoint = data[0] % 2 == 0 ? moeserve::OpenAiEndpoint::kChatCompletions
                                         : moeserve::OpenAiEndpoint::kCompletions;
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  auto request = moeserve::ParseOpenAiRequest(endpoint, body);
  if (!request.ok()) {
    // What the HTTP server sends back for it.
    (void)moeserve::OpenAiErrorParam(request.status());
    (void)moeserve::DumpJson(moeserve::OpenAiError(request.status()));
    return 0;
  }
  Require(request->n >= 1 && request->n <= moeserve::kMaxOpenAiChoices);
  Require(request->top_logprobs >= 0);
  if (endpoint == moeserve::OpenAiEndpoint::kCompletions) {
    Require(!request->prompts.empty());
    Require(request->n * static_cast<int64_t>(request->prompts.size()) <=
            moeserve::kMaxOpenAiChoices);
  } else {
    Require(request->messages.is_array());
    (void)moeserve::DumpJson(request->messages);
  }
  return 0;
}
