// OpenAI's HTTP API as moeserve reads it: request bodies of
// /v1/chat/completions and /v1/completions turned into the same protos the
// gRPC Inference service takes (so that both share conversion, validation
// and admission), and errors in OpenAI's shape. Pure: no I/O, no threads.
//
// Field by field (docs/serving.md has the table):
//   - Unknown fields are ignored, as OpenAI's server does; a known field of
//     the wrong JSON type is INVALID_ARGUMENT naming it (param).
//   - Values in range for the proto go through unchanged, so that the
//     messages for bad values are the gRPC service's words.
//   - Refused with a reason: echo, suffix, best_of > 1, response_format
//     other than text, non-text message parts, tool_choice "required" or a
//     named function (no constrained decoding).
#ifndef MOESERVE_SCHEDULER_SERVER_OPENAI_PROTOCOL_H_
#define MOESERVE_SCHEDULER_SERVER_OPENAI_PROTOCOL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "moeserve/v1/inference.pb.h"
#include "nlohmann/json.hpp"

namespace moeserve {

enum class OpenAiEndpoint { kChatCompletions, kCompletions };

struct OpenAiRequest {
  OpenAiEndpoint endpoint = OpenAiEndpoint::kChatCompletions;
  std::optional<std::string> model;  // unset: the served one
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  int32_t n = 1;               // choices per prompt
  bool logprobs = false;       // report the chosen tokens' log-probabilities
  int32_t top_logprobs = 0;    // and this many alternatives
  // Chat: the conversation and its sampling, for ChatPromptIds and FromProto.
  v1::ChatRequest chat;
  // Chat: the messages as the template reads them (tool calls, tool results,
  // reasoning_content kept), the tools it is given, and whether to read tool
  // calls back from the output (tools given and tool_choice "auto").
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  std::optional<nlohmann::ordered_json> tools;
  bool parse_tool_calls = false;
  // Completions: one request per prompt (text or token ids), in order.
  std::vector<v1::GenerateRequest> prompts;
};

// Most choices one HTTP request may ask for (n times the prompts).
inline constexpr int32_t kMaxOpenAiChoices = 128;

// Parses a request body. Errors are INVALID_ARGUMENT with the offending
// field attached (OpenAiErrorParam).
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, const std::string& body);

// The OpenAI field a status is about: the one attached by the parser, or the
// field a gRPC validation message names ("sampling.temperature ..." is
// "temperature"); empty when none.
std::string OpenAiErrorParam(const absl::Status& status);
// Attaches `param` to `status` (for OpenAiErrorParam).
absl::Status WithOpenAiParam(absl::Status status, absl::string_view param);

// The HTTP status of an error: 400 bad request, 401, 404, 429 queue full,
// 503 not ready or draining, 504 deadline, 500 otherwise.
int HttpStatusOf(const absl::Status& status);

// {"error": {"message", "type", "param", "code"}} for `status`.
nlohmann::ordered_json OpenAiError(const absl::Status& status);

// `value` as compact JSON; bytes that are not UTF-8 become U+FFFD instead of
// throwing (token texts are made valid upstream; this is the last guard).
std::string DumpJson(const nlohmann::ordered_json& value);

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SERVER_OPENAI_PROTOCOL_H_
