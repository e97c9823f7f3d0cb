// Fuzzes chat templates and the conversations they render: the input is a
// Jinja template source, then (after a "----" line) the messages as a JSON
// list; without that part, or when it is not a JSON list, a fixed
// conversation with a system prompt, a tool call, its result and a reasoning
// trace. Creating and rendering may fail, with a status; they may not crash,
// hang or allocate without bound.
#include <cstddef>
#include <cstdint>
#include <string>

#include "nlohmann/json.hpp"
#include "scheduler/chat/chat_template.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using nlohmann::ordered_json;

ordered_json DefaultMessages() {
  return ordered_json::parse(R"([
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": null, "reasoning_content": "Call the tool.",
     "tool_calls": [{"type": "function", "id": "call_0",
                     "function": {"name": "weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "tool_call_id": "call_0", "content": "{\"celsius\": 21}"},
    {"role": "assistant", "content": "21 °C."},
    {"role": "user", "content": "Thanks"}
  ])");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ordered_json kDefaultMessages = DefaultMessages();
  auto [source, messages_text] = moeserve::fuzz::SplitInput(data, size);
  moeserve::ChatSpecialTokens special;
  special.tokens = {{"bos_token", "<s>"}, {"eos_token", "</s>"}};
  auto chat = moeserve::ChatTemplate::Create(source, special);
  if (!chat.ok()) return 0;
  ordered_json messages = ordered_json::parse(messages_text, /*cb=*/nullptr,
                                              /*allow_exceptions=*/false);
  if (!messages.is_array()) messages = kDefaultMessages;
  moeserve::ChatOptions options;
  options.add_generation_prompt = true;
  options.tools = ordered_json::parse(R"([{"type": "function", "function": {"name": "weather",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])");
  options.extra = {{"enable_thinking", false}};
  (void)(*chat)->Render(messages, options);
  return 0;
}
