// The body of an OpenAI chat or completions response, built from the
// moeserve.v1 response streams of its choices: whole (chat.completion,
// text_completion) or as server-sent events (chat.completion.chunk, with
// "data: [DONE]" last). Pure: no I/O, no threads; one per HTTP request, used
// on one thread at a time.
//
// Choice i belongs to prompt i / n (completions with several prompts; chat
// has one). Usage counts each prompt once (its n samples share it),
// completion tokens of every choice, and cached prompt tokens.
#ifndef MOESERVE_SCHEDULER_SERVER_OPENAI_RESPONSE_H_
#define MOESERVE_SCHEDULER_SERVER_OPENAI_RESPONSE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moeserve/v1/inference.pb.h"
#include "nlohmann/json.hpp"
#include "scheduler/server/chat_output_parser.h"
#include "scheduler/server/openai_protocol.h"

namespace moeserve {

class OpenAiResponseBuilder {
 public:
  struct Options {
    OpenAiEndpoint endpoint = OpenAiEndpoint::kChatCompletions;
    std::string id;       // "chatcmpl-..." / "cmpl-..."
    int64_t created = 0;  // Unix seconds
    std::string model;    // the served model's name
    int32_t choices = 1;  // prompts * n
    int32_t n = 1;        // choices per prompt
    bool stream = false;
    bool include_usage = false;
    bool logprobs = false;
    int32_t top_logprobs = 0;  // alternatives to report (the request may carry more)
    // Chat only: split reasoning and tool calls off the content (see
    // ChatOutputParser); a tool call turns finish_reason "stop" into
    // "tool_calls".
    ChatOutputParser::Options parse;
  };

  explicit OpenAiResponseBuilder(Options options);

  // Streaming: the events that open the stream (chat: each choice's role).
  std::string StreamStart() const;
  // One response of choice `index`'s stream. Streaming: the events to send
  // now ("" when none); otherwise the text and logprobs are kept for Body.
  std::string Add(int32_t index, const v1::GenerateResponse& response);
  // Streaming, once every choice has ended: the usage chunk when asked for,
  // then "data: [DONE]".
  std::string StreamEnd() const;
  // The whole response, once every choice has ended.
  nlohmann::ordered_json Body() const;

  // An error inside a stream: an event carrying {"error": ...}, then [DONE].
  static std::string StreamError(const nlohmann::ordered_json& error);

 private:
  struct Choice {
    std::unique_ptr<ChatOutputParser> parser;  // chat with reasoning or tools
    std::string text;                          // the whole output (content), when not streaming
    std::string reasoning;                     // when not streaming
    // When not streaming, the calls; when streaming, one entry per call sent.
    nlohmann::ordered_json tool_calls = nlohmann::ordered_json::array();
    int32_t tool_call_count = 0;      // the index of the next call
    nlohmann::ordered_json logprobs;  // chat: content entries; completions: the four lists
    int64_t text_offset = 0;          // completions' text_offset of the next token
    std::string finish_reason;        // set by the final message
    v1::Usage usage;
  };

  nlohmann::ordered_json Envelope() const;  // id, object, created, model
  nlohmann::ordered_json Usage() const;
  // `chunk`'s logprobs in the endpoint's shape, appended to `into` (a
  // chat's content array or completions' object of lists).
  void AppendLogprobs(const v1::Chunk& chunk, Choice& choice, nlohmann::ordered_json& into) const;
  std::string Event(nlohmann::ordered_json choice) const;
  // A chat delta's parsed text: kept for Body, or the event that sends it.
  std::string Deliver(int32_t index, Choice& choice, ParsedOutput parsed,
                      nlohmann::ordered_json logprobs);

  const Options options_;
  std::vector<Choice> choices_;
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SERVER_OPENAI_RESPONSE_H_
