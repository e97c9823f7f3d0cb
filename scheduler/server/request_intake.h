// The one path from a plain request to the engine loop that every front end
// takes (the gRPC Inference service and the OpenAI-compatible HTTP API), so
// that both admit, validate and refuse requests alike, with the same words.
//
// Thread safe: free functions over the loop's thread-safe calls and the
// immutable TextFrontend.
#ifndef MOESERVE_SCHEDULER_SERVER_REQUEST_INTAKE_H_
#define MOESERVE_SCHEDULER_SERVER_REQUEST_INTAKE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "moeserve/v1/inference.pb.h"
#include "nlohmann/json.hpp"
#include "scheduler/admission/generation_request.h"
#include "scheduler/server/engine_loop.h"
#include "scheduler/server/text_frontend.h"

namespace moeserve {

// A key for EngineLoop::Submit, unique within this process ("req-<us>-<n>").
std::string NewRequestKey();

// FailedPrecondition for `what` ("text input") on a coordinator started
// without --tokenizer, saying how to start it.
absl::Status NoTokenizer(const std::string& what);

// The label of moeserve_requests_rejected_total for a refusal.
const char* RejectReason(const absl::Status& status);

// Checks `request` against the served model (vocabulary, context, KV cache,
// sampling ranges: ValidateRequest) and the text side (stop strings need the
// tokenizer), and fills its defaults (max_tokens). UNAVAILABLE while no
// worker is ready. Counts nothing.
absl::Status ValidateForServing(const EngineLoop& loop, const TextFrontend* text,
                                GenerationRequest& request);

// Hands a validated `request` to the loop under `key`; its responses go to
// `sink`, through the text layer (text deltas, stop strings) when `text` is
// set. The loop's own refusals (queue full, draining) come back unchanged and
// nothing is sent to `sink` then.
absl::Status SubmitToLoop(EngineLoop& loop, const TextFrontend* text, const std::string& key,
                          GenerationRequest request, std::shared_ptr<ResponseSink> sink);

// The prompt ids of a chat: rendered with the model's template, encoded
// without adding special tokens (the template wrote them). NoTokenizer
// without `text`; InvalidArgument for an empty rendering.
absl::StatusOr<std::vector<int32_t>> ChatPromptIds(const TextFrontend* text,
                                                   const v1::ChatRequest& request);

// A chat prompt from JSON messages and tools (TextFrontend::RenderChat's
// second form): its text and ids, with the same checks.
struct ChatPrompt {
  std::string text;
  std::vector<int32_t> ids;
};
absl::StatusOr<ChatPrompt> RenderChatPrompt(const TextFrontend* text,
                                            const nlohmann::ordered_json& messages,
                                            const std::optional<nlohmann::ordered_json>& tools,
                                            const v1::ChatRequest& options);

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SERVER_REQUEST_INTAKE_H_
