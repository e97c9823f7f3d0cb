// The OpenAI-compatible HTTP API of the coordinator (--http-listen):
//   POST /v1/chat/completions, POST /v1/completions, GET /v1/models,
//   GET /v1/models/{id}, GET /health.
// Requests become the same plain requests as the gRPC Inference service's
// (openai_protocol.h), pass the same validation and admission
// (request_intake.h) and run in the same engine loop; n samples are n
// requests of one prompt (the prefix cache shares its KV). Chat output is
// split into reasoning_content, tool_calls and content (chat_output_parser.h)
// when the model's tokenizer has the markup. A client that
// disconnects cancels its requests, which frees their KV within a step.
//
// With API keys, every route but /health needs "Authorization: Bearer KEY"
// (401 otherwise); keys are compared in constant time.
//
// Thread safety: Handle is called by the HTTP server on a connection's
// strand; the object is immutable after construction.
#ifndef MOESERVE_SCHEDULER_SERVER_OPENAI_API_H_
#define MOESERVE_SCHEDULER_SERVER_OPENAI_API_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "scheduler/server/chat_output_parser.h"
#include "scheduler/server/engine_loop.h"
#include "scheduler/server/http_server.h"
#include "scheduler/server/metrics.h"
#include "scheduler/server/openai_protocol.h"
#include "scheduler/server/text_frontend.h"

namespace moeserve {

class OpenAiApi {
 public:
  struct Options {
    std::vector<std::string> api_keys;  // empty: no authentication
  };

  // `loop` and `metrics` must outlive the object and every request it
  // started; `text` null: token-id prompts only (text needs --tokenizer).
  OpenAiApi(EngineLoop& loop, CoordinatorMetrics& metrics, std::shared_ptr<const TextFrontend> text,
            Options options);

  // The HttpHandler.
  void Handle(const HttpRequest& request, std::shared_ptr<HttpExchange> exchange);

 private:
  void Health(HttpExchange& exchange) const;
  void Models(const std::string& path, HttpExchange& exchange) const;
  void Generate(OpenAiEndpoint endpoint, const HttpRequest& request,
                std::shared_ptr<HttpExchange> exchange);
  // A request refused before it reached the loop, counted as gRPC counts it.
  void Refuse(HttpExchange& exchange, const absl::Status& status);

  EngineLoop& loop_;
  CoordinatorMetrics& metrics_;
  const std::shared_ptr<const TextFrontend> text_;
  const Options options_;
  const int64_t started_unix_seconds_;  // "created" of the served model
  // What the tokenizer says of the model's chat output: its tool-call markup
  // (kNone: tool calls stay content) and whether it reasons in <think>.
  ToolCallFormat tool_call_format_ = ToolCallFormat::kNone;
  bool reasoning_ = false;
};

// Whether `authorization` is "Bearer KEY" with KEY one of `keys`; the
// comparison takes the same time wherever a key differs.
bool AuthorizedBearer(absl::string_view authorization, const std::vector<std::string>& keys);

// The API keys in `path`: one per line, surrounding whitespace and blank
// lines ignored. INVALID_ARGUMENT when unreadable or holding no key.
absl::StatusOr<std::vector<std::string>> ReadApiKeyFile(const std::string& path);

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SERVER_OPENAI_API_H_
