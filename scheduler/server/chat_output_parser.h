// Splits a chat model's generated text into what OpenAI's API returns apart:
// reasoning ("<think> ... </think>", DeepSeek-R1 and Qwen3) as
// reasoning_content, tool calls in the model family's own markup as
// tool_calls, and the rest as content. Works on text deltas as they stream,
// holding back only text that could be the start of a marker.
//
// Markup, as the published chat templates write it (and the models emit it):
//   DeepSeek-V3/R1: <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME
//                   ```json\nARGS\n```<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>
//   DeepSeek-V3.1:  <｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>
//   Qwen3:          <tool_call>\n{"name": NAME, "arguments": {...}}\n</tool_call>
// A call is returned once its closing marker arrives. A call that never
// closes, or whose JSON does not parse, is returned as content, unchanged.
//
// Pure: no I/O, no threads. Not thread safe; one per generated choice.
#ifndef MOESERVE_SCHEDULER_SERVER_CHAT_OUTPUT_PARSER_H_
#define MOESERVE_SCHEDULER_SERVER_CHAT_OUTPUT_PARSER_H_

#include <string>
#include <string_view>
#include <vector>

namespace moeserve {

enum class ToolCallFormat { kNone, kDeepSeek, kQwen3 };

struct ParsedToolCall {
  std::string name;
  std::string arguments;  // JSON text, as OpenAI's function.arguments
};

struct ParsedOutput {
  std::string content;
  std::string reasoning;
  std::vector<ParsedToolCall> tool_calls;
};

class ChatOutputParser {
 public:
  struct Options {
    ToolCallFormat tool_calls = ToolCallFormat::kNone;  // kNone: markup stays content
    bool reasoning = false;  // split "<think> ... </think>" off as reasoning
    // The prompt already opened the reasoning (DeepSeek-R1's template ends
    // with "<think>\n"): the output starts inside it.
    bool starts_in_reasoning = false;
  };

  explicit ChatOutputParser(Options options);

  // The next generated text; what can be told apart so far.
  ParsedOutput Push(std::string_view text);
  // The end of the output: everything still held back.
  ParsedOutput Finish();

 private:
  enum class Mode { kStart, kReasoning, kContent, kToolCalls };

  void Step(ParsedOutput& out, bool final);
  // Ends the tool-call section held in tool_text_: its calls, or content.
  void FlushToolCalls(ParsedOutput& out, bool closed);

  const Options options_;
  Mode mode_;
  std::string pending_;             // text not yet classified
  std::string tool_text_;           // the open tool-call section, markers included
  bool content_started_ = false;    // leading newlines after </think> are dropped
  bool reasoning_started_ = false;  // leading newlines after <think> are dropped
  bool saw_tool_call_ = false;      // whitespace between calls is not content
};

// Parses one call's markup (between its begin and end markers, excluded) of
// `format`; false when it is not a call.
bool ParseToolCall(ToolCallFormat format, std::string_view body, ParsedToolCall& call);

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SERVER_CHAT_OUTPUT_PARSER_H_
