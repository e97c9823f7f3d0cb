#include "scheduler/server/request_intake.h"

#include <atomic>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "scheduler/admission/request_validator.h"

namespace moeserve {

std::string NewRequestKey() {
  static std::atomic<uint64_t> counter{0};
  return absl::StrCat("req-", absl::ToUnixMicros(absl::Now()), "-", counter.fetch_add(1));
}

absl::Status NoTokenizer(const std::string& what) {
  return absl::FailedPreconditionError(
      absl::StrCat(what,
                   " needs the model's tokenizer, and this coordinator was started without one: "
                   "start moeserve-coordinator with --tokenizer DIR (the model directory, or one "
                   "holding its tokenizer.json and tokenizer_config.json)"));
}

const char* RejectReason(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kFailedPrecondition:
      return "failed_precondition";
    case absl::StatusCode::kUnavailable:
      return "unavailable";
    case absl::StatusCode::kResourceExhausted:
      return "queue_full";
    default:
      return "invalid_argument";
  }
}

absl::Status ValidateForServing(const EngineLoop& loop, const TextFrontend* text,
                                GenerationRequest& request) {
  const EngineLoop::Snapshot snap = loop.snapshot();
  if (!snap.worker.has_value() || !loop.ready()) {
    return absl::UnavailableError("no worker is ready yet; retry shortly");
  }
  RequestLimits limits;
  limits.vocab_size = snap.worker->model().vocab_size();
  limits.max_context_tokens = snap.worker->model().max_context_tokens();
  limits.max_kv_tokens = static_cast<int64_t>(snap.worker->kv().num_blocks()) *
                         static_cast<int64_t>(snap.worker->kv().block_tokens());
  if (absl::Status s = ValidateRequest(limits, request); !s.ok()) return s;
  if (!request.stopping.stop.empty() && text == nullptr) {
    return NoTokenizer("stopping.stop (stop strings are matched on the text)");
  }
  return absl::OkStatus();
}

absl::Status SubmitToLoop(EngineLoop& loop, const TextFrontend* text, const std::string& key,
                          GenerationRequest request, std::shared_ptr<ResponseSink> sink) {
  if (request.request_id.empty()) request.request_id = key;
  if (text != nullptr) sink = text->WrapSink(std::move(sink), request.stopping);
  return loop.Submit(key, std::move(request), std::move(sink));
}

namespace {

// The ids of a rendered chat prompt: encoded without adding special tokens
// (the template wrote them), and not empty.
absl::StatusOr<std::vector<int32_t>> EncodeChat(const TextFrontend& text,
                                                const std::string& prompt) {
  auto ids = text.Encode(prompt, /*add_special_tokens=*/false);
  if (!ids.ok()) return ids.status();
  if (ids->empty()) {
    return absl::InvalidArgumentError("the chat template rendered an empty prompt");
  }
  return ids;
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> ChatPromptIds(const TextFrontend* text,
                                                   const v1::ChatRequest& request) {
  if (text == nullptr) return NoTokenizer("Chat");
  auto prompt = text->RenderChat(request);
  if (!prompt.ok()) return prompt.status();
  return EncodeChat(*text, *prompt);
}

absl::StatusOr<ChatPrompt> RenderChatPrompt(const TextFrontend* text,
                                            const nlohmann::ordered_json& messages,
                                            const std::optional<nlohmann::ordered_json>& tools,
                                            const v1::ChatRequest& options) {
  if (text == nullptr) return NoTokenizer("Chat");
  auto prompt = text->RenderChat(messages, tools, options);
  if (!prompt.ok()) return prompt.status();
  auto ids = EncodeChat(*text, *prompt);
  if (!ids.ok()) return ids.status();
  return ChatPrompt{*std::move(prompt), *std::move(ids)};
}

}  // namespace moeserve
