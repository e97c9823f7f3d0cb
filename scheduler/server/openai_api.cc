#include "scheduler/server/openai_api.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "scheduler/server/openai_response.h"
#include "scheduler/server/request_intake.h"
#include "scheduler/server/services.h"

namespace moeserve {
namespace {

constexpr char kJson[] = "application/json";

void RespondError(HttpExchange& exchange, const absl::Status& status) {
  exchange.Respond(HttpStatusOf(status), kJson, DumpJson(OpenAiError(status)));
}

// One HTTP generation request: its choices' streams, the response being
// built, and the engine keys to cancel. Used on the connection's strand only.
class OpenAiCall final : public std::enable_shared_from_this<OpenAiCall> {
 public:
  OpenAiCall(EngineLoop& loop, std::shared_ptr<const TextFrontend> text,
             std::shared_ptr<HttpExchange> exchange, OpenAiResponseBuilder::Options options)
      : loop_(loop),
        text_(std::move(text)),
        exchange_(std::move(exchange)),
        choices_(options.choices),
        builder_(std::move(options)) {}

  HttpExchange& exchange() { return *exchange_; }

  // Hands choice `index` to the engine loop; false when it refused (the
  // call has then failed with its status).
  bool Submit(int32_t index, GenerationRequest request);
  // A further sample of the prompt whose first sample is `leader`: submitted
  // once the leader's prompt is prefilled (its first token arrived), so that
  // its full KV blocks are in the prefix cache and every sample shares them.
  void Defer(int32_t leader, int32_t index, GenerationRequest request) {
    deferred_[leader].emplace_back(index, std::move(request));
  }

  void StartStream() {
    exchange_->StartStream(200, "text/event-stream");
    streaming_ = true;
    exchange_->Write(builder_.StreamStart());
  }

  void OnResponse(int32_t index, const v1::GenerateResponse& response) {
    if (finished_) return;
    ReleaseDeferred(index);
    if (finished_) return;
    std::string events = builder_.Add(index, response);
    if (streaming_) exchange_->Write(std::move(events));
  }

  void OnClose(int32_t index, const absl::Status& status) {
    if (finished_) return;
    if (!status.ok()) {
      Fail(status);
      return;
    }
    ReleaseDeferred(index);
    if (finished_) return;
    if (++done_ < choices_) return;
    finished_ = true;
    if (streaming_) {
      exchange_->Write(builder_.StreamEnd());
      exchange_->EndStream();
    } else {
      exchange_->Respond(200, kJson, DumpJson(builder_.Body()));
    }
  }

  // Ends the answer with `status`; the other choices are cancelled.
  void Fail(const absl::Status& status) {
    if (finished_) return;
    finished_ = true;
    CancelAll();
    if (streaming_) {
      exchange_->Write(OpenAiResponseBuilder::StreamError(OpenAiError(status)));
      exchange_->EndStream();
    } else {
      RespondError(*exchange_, status);
    }
  }

  // The client went away: nothing more to send, every choice cancelled.
  void ClientGone() {
    finished_ = true;
    CancelAll();
  }

 private:
  void CancelAll() {
    for (const std::string& key : keys_) loop_.Cancel(key);  // finished ones are ignored
  }

  void ReleaseDeferred(int32_t leader) {
    auto it = deferred_.find(leader);
    if (it == deferred_.end()) return;
    std::vector<std::pair<int32_t, GenerationRequest>> samples = std::move(it->second);
    deferred_.erase(it);
    for (auto& [index, request] : samples) {
      if (!Submit(index, std::move(request))) return;
    }
  }

  EngineLoop& loop_;
  const std::shared_ptr<const TextFrontend> text_;
  // Samples waiting for their prompt's first sample to prefill, by its index.
  std::map<int32_t, std::vector<std::pair<int32_t, GenerationRequest>>> deferred_;
  const std::shared_ptr<HttpExchange> exchange_;
  const int32_t choices_;
  OpenAiResponseBuilder builder_;
  std::vector<std::string> keys_;  // engine keys of the submitted choices
  int32_t done_ = 0;               // choices that ended well
  bool streaming_ = false;         // the 200 and the event stream have started
  bool finished_ = false;          // answered, failed, or the client is gone
};

// Where one choice's responses go: from the engine thread onto the
// connection's strand, in order.
class ChoiceSink final : public ResponseSink {
 public:
  ChoiceSink(std::shared_ptr<OpenAiCall> call, int32_t index)
      : call_(std::move(call)), index_(index) {}
  void Send(v1::GenerateResponse response) override {
    auto shared = std::make_shared<v1::GenerateResponse>(std::move(response));
    call_->exchange().Post(
        [call = call_, index = index_, shared] { call->OnResponse(index, *shared); });
  }
  void Close(absl::Status status) override {
    call_->exchange().Post(
        [call = call_, index = index_, status] { call->OnClose(index, status); });
  }

 private:
  const std::shared_ptr<OpenAiCall> call_;
  const int32_t index_;
};

bool OpenAiCall::Submit(int32_t index, GenerationRequest request) {
  const std::string key = NewRequestKey();
  keys_.push_back(key);
  absl::Status s = SubmitToLoop(loop_, text_.get(), key, std::move(request),
                                std::make_shared<ChoiceSink>(shared_from_this(), index));
  if (s.ok()) return true;
  Fail(s);  // the loop counted the refusal
  return false;
}

std::string NewResponseId(OpenAiEndpoint endpoint) {
  return absl::StrCat(endpoint == OpenAiEndpoint::kChatCompletions ? "chatcmpl-" : "cmpl-",
                      NewRequestKey().substr(4));
}

}  // namespace

OpenAiApi::OpenAiApi(EngineLoop& loop, CoordinatorMetrics& metrics,
                     std::shared_ptr<const TextFrontend> text, Options options)
    : loop_(loop),
      metrics_(metrics),
      text_(std::move(text)),
      options_(std::move(options)),
      started_unix_seconds_(absl::ToUnixSeconds(absl::Now())) {
  // The served family's markup, from tokens only its tokenizer has.
  if (text_ != nullptr) {
    const Tokenizer& t = text_->tokenizer();
    if (t.TokenToId("<｜tool▁calls▁begin｜>").has_value()) {
      tool_call_format_ = ToolCallFormat::kDeepSeek;
    } else if (t.TokenToId("<tool_call>").has_value()) {
      tool_call_format_ = ToolCallFormat::kQwen3;
    }
    reasoning_ = t.TokenToId("</think>").has_value();
  }
}

void OpenAiApi::Handle(const HttpRequest& request, std::shared_ptr<HttpExchange> exchange) {
  const std::string& path = request.path;
  const bool get = request.method == "GET";
  const bool post = request.method == "POST";
  if (path == "/health") {
    if (!get) {
      RespondError(*exchange, absl::NotFoundError(absl::StrCat("Invalid URL (", request.method,
                                                               " /health): use GET")));
      return;
    }
    Health(*exchange);
    return;
  }
  if (!options_.api_keys.empty() && !AuthorizedBearer(request.authorization, options_.api_keys)) {
    RespondError(*exchange, absl::UnauthenticatedError(
                                request.authorization.empty()
                                    ? "no API key: send the header \"Authorization: Bearer <key>\""
                                    : "incorrect API key in the Authorization header"));
    return;
  }
  if (path == "/v1/chat/completions" && post) {
    Generate(OpenAiEndpoint::kChatCompletions, request, std::move(exchange));
  } else if (path == "/v1/completions" && post) {
    Generate(OpenAiEndpoint::kCompletions, request, std::move(exchange));
  } else if ((path == "/v1/models" || absl::StartsWith(path, "/v1/models/")) && get) {
    Models(path, *exchange);
  } else {
    RespondError(*exchange,
                 absl::NotFoundError(absl::StrCat(
                     "Invalid URL (", request.method, " ", path,
                     "): moeserve serves POST /v1/chat/completions, POST /v1/completions, "
                     "GET /v1/models and GET /health")));
  }
}

void OpenAiApi::Health(HttpExchange& exchange) const {
  if (loop_.draining()) {
    RespondError(exchange,
                 absl::UnavailableError("the service is draining and admits no new requests"));
  } else if (!loop_.ready()) {
    RespondError(exchange, absl::UnavailableError("the workers are not ready yet; retry shortly"));
  } else {
    exchange.Respond(200, kJson, R"({"status":"ok"})");
  }
}

void OpenAiApi::Models(const std::string& path, HttpExchange& exchange) const {
  const EngineLoop::Snapshot snap = loop_.snapshot();
  if (!snap.worker.has_value()) {
    RespondError(exchange, absl::UnavailableError("no worker is ready yet; retry shortly"));
    return;
  }
  const v1::ModelInfo& info = snap.worker->model();
  nlohmann::ordered_json model = {{"id", info.model_name()},
                                  {"object", "model"},
                                  {"created", started_unix_seconds_},
                                  {"owned_by", "moeserve"},
                                  {"max_model_len", info.max_context_tokens()}};
  if (path == "/v1/models") {
    exchange.Respond(
        200, kJson,
        DumpJson({{"object", "list"}, {"data", nlohmann::ordered_json::array({model})}}));
    return;
  }
  const std::string id = path.substr(std::string("/v1/models/").size());
  if (id != info.model_name()) {
    RespondError(exchange, absl::NotFoundError(absl::StrCat(
                               "The model `", id, "` does not exist; this server serves `",
                               info.model_name(), "`")));
    return;
  }
  exchange.Respond(200, kJson, DumpJson(model));
}

void OpenAiApi::Refuse(HttpExchange& exchange, const absl::Status& status) {
  metrics_.Rejected(RejectReason(status)).Increment();
  RespondError(exchange, status);
}

void OpenAiApi::Generate(OpenAiEndpoint endpoint, const HttpRequest& http,
                         std::shared_ptr<HttpExchange> exchange) {
  auto parsed = ParseOpenAiRequest(endpoint, http.body);
  if (!parsed.ok()) return Refuse(*exchange, parsed.status());
  const EngineLoop::Snapshot snap = loop_.snapshot();
  if (!snap.worker.has_value() || !loop_.ready()) {
    return Refuse(*exchange, absl::UnavailableError("no worker is ready yet; retry shortly"));
  }
  const std::string& served = snap.worker->model().model_name();
  if (parsed->model.has_value() && *parsed->model != served) {
    return RespondError(
        *exchange,
        WithOpenAiParam(absl::NotFoundError(absl::StrCat("The model `", *parsed->model,
                                                         "` does not exist; this server serves `",
                                                         served, "` (GET /v1/models)")),
                        "model"));
  }

  // The prompts as plain requests, converted and validated as gRPC's are.
  std::vector<GenerationRequest> prompts;
  ChatOutputParser::Options parse;
  if (endpoint == OpenAiEndpoint::kChatCompletions) {
    auto prompt = RenderChatPrompt(text_.get(), parsed->messages, parsed->tools, parsed->chat);
    if (!prompt.ok()) return Refuse(*exchange, prompt.status());
    if (parsed->parse_tool_calls) parse.tool_calls = tool_call_format_;
    parse.reasoning = reasoning_;
    // DeepSeek-R1's template opens the reasoning in the prompt.
    const std::string& text = prompt->text;
    parse.starts_in_reasoning =
        reasoning_ && (absl::EndsWith(text, "<think>\n") || absl::EndsWith(text, "<think>"));
    prompts.push_back(FromProto(parsed->chat, std::move(prompt->ids)));
  } else {
    for (const v1::GenerateRequest& p : parsed->prompts) {
      auto request = FromProto(p, text_.get());
      if (!request.ok()) return Refuse(*exchange, WithOpenAiParam(request.status(), "prompt"));
      prompts.push_back(*std::move(request));
    }
  }
  for (GenerationRequest& r : prompts) {
    // The chosen token's log-probability comes with at least one alternative.
    r.logprobs = parsed->logprobs ? std::max(1, parsed->top_logprobs) : 0;
    if (absl::Status s = ValidateForServing(loop_, text_.get(), r); !s.ok()) {
      return Refuse(*exchange, s);
    }
  }

  OpenAiResponseBuilder::Options options;
  options.endpoint = endpoint;
  options.id = NewResponseId(endpoint);
  options.created = absl::ToUnixSeconds(absl::Now());
  options.model = served;
  options.n = parsed->n;
  options.choices = static_cast<int32_t>(prompts.size()) * parsed->n;
  options.stream = parsed->stream;
  options.include_usage = parsed->stream && parsed->include_usage;
  options.logprobs = parsed->logprobs;
  options.top_logprobs = parsed->top_logprobs;
  options.parse = parse;
  auto call = std::make_shared<OpenAiCall>(loop_, text_, exchange, std::move(options));
  exchange->OnClientGone([call] { call->ClientGone(); });
  int32_t index = 0;
  for (const GenerationRequest& prompt : prompts) {
    const int32_t leader = index;
    for (int32_t j = 0; j < parsed->n; ++j, ++index) {
      GenerationRequest r = prompt;
      if (r.sampling.seed.has_value()) *r.sampling.seed += static_cast<uint64_t>(j);
      if (j > 0) {
        call->Defer(leader, index, std::move(r));
      } else if (!call->Submit(index, std::move(r))) {
        return;
      }
    }
  }
  if (parsed->stream) call->StartStream();
}

bool AuthorizedBearer(absl::string_view authorization, const std::vector<std::string>& keys) {
  constexpr absl::string_view kBearer = "Bearer ";
  if (authorization.size() <= kBearer.size() ||
      !absl::EqualsIgnoreCase(authorization.substr(0, kBearer.size()), kBearer)) {
    return false;
  }
  const absl::string_view given = absl::StripAsciiWhitespace(authorization.substr(kBearer.size()));
  bool found = false;
  for (const std::string& key : keys) {
    // Every byte of the given key is compared, whatever the first difference.
    unsigned char diff = given.size() == key.size() ? 0 : 1;
    for (size_t i = 0; i < given.size(); ++i) {
      diff |= static_cast<unsigned char>(given[i]) ^
              static_cast<unsigned char>(key.empty() ? 0 : key[i % key.size()]);
    }
    found |= (diff == 0);
  }
  return found;
}

absl::StatusOr<std::vector<std::string>> ReadApiKeyFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read the API key file ", path));
  std::stringstream text;
  text << in.rdbuf();
  std::vector<std::string> keys;
  for (absl::string_view line : absl::StrSplit(text.str(), '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (!line.empty()) keys.emplace_back(line);
  }
  if (keys.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the API key file ", path, " holds no key (one key per line)"));
  }
  return keys;
}

}  // namespace moeserve
