#include "scheduler/server/openai_response.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace moeserve {
namespace {

using ojson = nlohmann::ordered_json;

bool IsChat(OpenAiEndpoint e) { return e == OpenAiEndpoint::kChatCompletions; }

const char* FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_ABORT:
      return "abort";
    default:  // an end-of-sequence or stop token, or a stop string
      return "stop";
  }
}

ojson Bytes(const std::string& text) {
  ojson bytes = ojson::array();
  for (unsigned char c : text) bytes.push_back(static_cast<int>(c));
  return bytes;
}

}  // namespace

OpenAiResponseBuilder::OpenAiResponseBuilder(Options options)
    : options_(std::move(options)), choices_(static_cast<size_t>(std::max(1, options_.choices))) {
  const bool parse =
      IsChat(options_.endpoint) &&
      (options_.parse.reasoning || options_.parse.tool_calls != ToolCallFormat::kNone);
  for (Choice& c : choices_) {
    if (parse) c.parser = std::make_unique<ChatOutputParser>(options_.parse);
    c.logprobs = IsChat(options_.endpoint) ? ojson::array()
                                           : ojson{{"tokens", ojson::array()},
                                                   {"token_logprobs", ojson::array()},
                                                   {"top_logprobs", ojson::array()},
                                                   {"text_offset", ojson::array()}};
  }
}

ojson OpenAiResponseBuilder::Envelope() const {
  const bool chat = IsChat(options_.endpoint);
  return {{"id", options_.id},
          {"object", chat ? (options_.stream ? "chat.completion.chunk" : "chat.completion")
                          : "text_completion"},
          {"created", options_.created},
          {"model", options_.model}};
}

std::string OpenAiResponseBuilder::Event(ojson choice) const {
  ojson event = Envelope();
  event["choices"] = ojson::array({std::move(choice)});
  if (options_.include_usage) event["usage"] = nullptr;
  return absl::StrCat("data: ", DumpJson(event), "\n\n");
}

std::string OpenAiResponseBuilder::StreamStart() const {
  if (!IsChat(options_.endpoint)) return "";
  std::string out;
  for (size_t i = 0; i < choices_.size(); ++i) {
    out += Event({{"index", i},
                  {"delta", {{"role", "assistant"}, {"content", ""}}},
                  {"logprobs", nullptr},
                  {"finish_reason", nullptr}});
  }
  return out;
}

void OpenAiResponseBuilder::AppendLogprobs(const v1::Chunk& chunk, Choice& choice,
                                           ojson& into) const {
  const auto top_count = static_cast<int>(options_.top_logprobs);
  for (const v1::GeneratedTokenLogprobs& lp : chunk.logprobs()) {
    const int tops = std::min(top_count, lp.top_size());
    if (IsChat(options_.endpoint)) {
      ojson top = ojson::array();
      for (int k = 0; k < tops; ++k) {
        const v1::TokenLogprob& t = lp.top(k);
        top.push_back({{"token", t.text()}, {"logprob", t.logprob()}, {"bytes", Bytes(t.text())}});
      }
      into.push_back({{"token", lp.chosen().text()},
                      {"logprob", lp.chosen().logprob()},
                      {"bytes", Bytes(lp.chosen().text())},
                      {"top_logprobs", std::move(top)}});
    } else {
      ojson top = ojson::object();
      for (int k = 0; k < tops; ++k) top[lp.top(k).text()] = lp.top(k).logprob();
      into["tokens"].push_back(lp.chosen().text());
      into["token_logprobs"].push_back(lp.chosen().logprob());
      into["top_logprobs"].push_back(std::move(top));
      into["text_offset"].push_back(choice.text_offset);
      choice.text_offset += static_cast<int64_t>(lp.chosen().text().size());
    }
  }
}

std::string OpenAiResponseBuilder::Deliver(int32_t index, Choice& choice, ParsedOutput parsed,
                                           ojson logprobs) {
  ojson calls = ojson::array();
  for (ParsedToolCall& call : parsed.tool_calls) {
    calls.push_back(
        {{"index", choice.tool_call_count++},
         {"id", absl::StrCat("call_", options_.id, "_", index, "_", choice.tool_call_count)},
         {"type", "function"},
         {"function", {{"name", std::move(call.name)}, {"arguments", std::move(call.arguments)}}}});
  }
  if (!options_.stream) {
    choice.text += parsed.content;
    choice.reasoning += parsed.reasoning;
    for (ojson& call : calls) {
      call.erase("index");
      choice.tool_calls.push_back(std::move(call));
    }
    return "";
  }
  ojson delta = ojson::object();
  if (!parsed.reasoning.empty()) delta["reasoning_content"] = std::move(parsed.reasoning);
  if (!parsed.content.empty()) delta["content"] = std::move(parsed.content);
  if (!calls.empty()) {
    choice.tool_calls.push_back(true);  // remembered for finish_reason
    delta["tool_calls"] = std::move(calls);
  }
  if (delta.empty() && logprobs.is_null()) return "";
  if (delta.empty()) delta["content"] = "";
  return Event({{"index", index},
                {"delta", std::move(delta)},
                {"logprobs", std::move(logprobs)},
                {"finish_reason", nullptr}});
}

std::string OpenAiResponseBuilder::Add(int32_t index, const v1::GenerateResponse& response) {
  if (index < 0 || static_cast<size_t>(index) >= choices_.size()) return "";
  Choice& choice = choices_[static_cast<size_t>(index)];
  const bool chat = IsChat(options_.endpoint);
  if (response.has_final()) {
    std::string out;
    if (choice.parser != nullptr) out = Deliver(index, choice, choice.parser->Finish(), nullptr);
    choice.finish_reason = FinishReasonName(response.final().finish_reason());
    if (choice.finish_reason == "stop" && !choice.tool_calls.empty()) {
      choice.finish_reason = "tool_calls";
    }
    choice.usage = response.final().usage();
    if (!options_.stream) return "";
    ojson fin = {{"index", index}};
    if (chat) {
      fin["delta"] = ojson::object();
    } else {
      fin["text"] = "";
    }
    fin["logprobs"] = nullptr;
    fin["finish_reason"] = choice.finish_reason;
    return out + Event(std::move(fin));
  }
  if (!response.has_chunk()) return "";
  const v1::Chunk& chunk = response.chunk();
  const bool has_logprobs = options_.logprobs && chunk.logprobs_size() > 0;
  if (!options_.stream) {
    if (has_logprobs) AppendLogprobs(chunk, choice, choice.logprobs);
  }
  ojson logprobs = nullptr;
  if (options_.stream && has_logprobs) {
    ojson entries = chat ? ojson::array()
                         : ojson{{"tokens", ojson::array()},
                                 {"token_logprobs", ojson::array()},
                                 {"top_logprobs", ojson::array()},
                                 {"text_offset", ojson::array()}};
    AppendLogprobs(chunk, choice, entries);
    logprobs = chat ? ojson{{"content", std::move(entries)}} : std::move(entries);
  }
  if (chat) {
    ParsedOutput parsed;
    if (choice.parser != nullptr) {
      parsed = choice.parser->Push(chunk.text_delta());
    } else {
      parsed.content = chunk.text_delta();
    }
    return Deliver(index, choice, std::move(parsed), std::move(logprobs));
  }
  if (!options_.stream) {
    choice.text += chunk.text_delta();
    return "";
  }
  if (chunk.text_delta().empty() && !has_logprobs) return "";
  return Event({{"index", index},
                {"text", chunk.text_delta()},
                {"logprobs", std::move(logprobs)},
                {"finish_reason", nullptr}});
}

ojson OpenAiResponseBuilder::Usage() const {
  int64_t prompt = 0, completion = 0, cached = 0;
  const size_t n = static_cast<size_t>(std::max(1, options_.n));
  for (size_t i = 0; i < choices_.size(); ++i) {
    const v1::Usage& u = choices_[i].usage;
    completion += u.completion_tokens();
    if (i % n == 0) {  // a prompt's first sample: count the prompt once
      prompt += u.prompt_tokens();
      uint32_t most_cached = 0;
      for (size_t j = i; j < std::min(i + n, choices_.size()); ++j) {
        most_cached = std::max(most_cached, choices_[j].usage.cached_tokens());
      }
      cached += most_cached;
    }
  }
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

std::string OpenAiResponseBuilder::StreamEnd() const {
  std::string out;
  if (options_.include_usage) {
    ojson event = Envelope();
    event["choices"] = ojson::array();
    event["usage"] = Usage();
    out = absl::StrCat("data: ", DumpJson(event), "\n\n");
  }
  return out + "data: [DONE]\n\n";
}

std::string OpenAiResponseBuilder::StreamError(const ojson& error) {
  return absl::StrCat("data: ", DumpJson(error), "\n\ndata: [DONE]\n\n");
}

ojson OpenAiResponseBuilder::Body() const {
  const bool chat = IsChat(options_.endpoint);
  ojson body = Envelope();
  ojson choices = ojson::array();
  for (size_t i = 0; i < choices_.size(); ++i) {
    const Choice& c = choices_[i];
    ojson logprobs = nullptr;
    if (options_.logprobs) logprobs = chat ? ojson{{"content", c.logprobs}} : c.logprobs;
    ojson choice = {{"index", i}};
    if (chat) {
      ojson message = {{"role", "assistant"}};
      message["content"] = c.text.empty() && !c.tool_calls.empty() ? ojson(nullptr) : ojson(c.text);
      if (!c.reasoning.empty()) message["reasoning_content"] = c.reasoning;
      if (!c.tool_calls.empty()) message["tool_calls"] = c.tool_calls;
      choice["message"] = std::move(message);
    } else {
      choice["text"] = c.text;
    }
    choice["logprobs"] = std::move(logprobs);
    choice["finish_reason"] = c.finish_reason;
    choices.push_back(std::move(choice));
  }
  body["choices"] = std::move(choices);
  body["usage"] = Usage();
  return body;
}

}  // namespace moeserve
