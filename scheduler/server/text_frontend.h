// The coordinator's text side: the served model's tokenizer and chat
// template, loaded once at start-up (moeserve-coordinator --tokenizer DIR),
// and what Generate, Chat and Tokenize do with them: prompts from text or
// from a conversation, and the text layer of every response stream.
//
// Choices, as Hugging Face and vLLM make them:
//   - Generate's text is encoded with add_special_tokens (BOS for
//     DeepSeek-V3, nothing for Qwen3), as tokenizer(text) and vLLM's
//     completions API do.
//   - A chat is rendered with add_generation_prompt (default true), then
//     encoded without adding special tokens: the template writes them itself
//     (DeepSeek-V3's starts with {{ bos_token }}), as apply_chat_template
//     (tokenize=True) and vLLM's chat API do.
//   - Streamed text leaves special tokens out (skip_special_tokens); the
//     proto has no field to ask otherwise.
//
// Thread safety: immutable after Load; every method may be called from any
// number of threads at once.
#ifndef MOESERVE_SCHEDULER_SERVER_TEXT_FRONTEND_H_
#define MOESERVE_SCHEDULER_SERVER_TEXT_FRONTEND_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "moeserve/v1/inference.pb.h"
#include "nlohmann/json.hpp"
#include "scheduler/admission/generation_request.h"
#include "scheduler/chat/chat_template.h"
#include "scheduler/server/engine_loop.h"
#include "scheduler/tokenizer/tokenizer.h"

namespace moeserve {

class TextFrontend {
 public:
  // Loads `dir`/tokenizer.json, `dir`/tokenizer_config.json and the chat
  // template in it (a model directory works). A tokenizer_config.json without
  // a chat_template is fine (Chat is then FAILED_PRECONDITION); missing or
  // malformed files and a template this interpreter cannot run are errors
  // naming the file.
  static absl::StatusOr<std::unique_ptr<TextFrontend>> Load(const std::string& dir);

  TextFrontend(const TextFrontend&) = delete;
  TextFrontend& operator=(const TextFrontend&) = delete;

  const std::string& dir() const { return dir_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  bool has_chat_template() const { return chat_template_ != nullptr; }

  // FailedPrecondition when the tokenizer has token ids at or past
  // `model_vocab_size` (the model's embedding rows): it is not this model's.
  // `who` names the model's side in the message ("worker w0").
  absl::Status CheckModelVocab(int64_t model_vocab_size, const std::string& who) const;

  // The ids of `text`; InvalidArgument naming the byte when it is not UTF-8.
  absl::StatusOr<std::vector<int32_t>> Encode(const std::string& text,
                                              bool add_special_tokens) const;

  // The prompt text of `request`'s conversation: its messages ({role,
  // content}, content "" when unset) rendered with add_generation_prompt
  // (default true), enable_thinking and template_kwargs. InvalidArgument for
  // no messages, bad template_kwargs, and the template's own errors (its
  // raise_exception message verbatim); FailedPrecondition when the model has
  // no chat template.
  absl::StatusOr<std::string> RenderChat(const v1::ChatRequest& request) const;
  // The same for messages given as JSON ({role, content, and what the
  // template reads: tool_calls, tool_call_id, name, reasoning_content}; a
  // null content stays null) and `tools` (a JSON list of function schemas,
  // the template's `tools`); `request` gives the other options and its own
  // messages are not read.
  absl::StatusOr<std::string> RenderChat(const nlohmann::ordered_json& messages,
                                         const std::optional<nlohmann::ordered_json>& tools,
                                         const v1::ChatRequest& request) const;

  // A sink that adds text to `inner`'s stream (see TextResponseSink), with
  // `stopping`'s stop strings and min_tokens.
  std::shared_ptr<ResponseSink> WrapSink(std::shared_ptr<ResponseSink> inner,
                                         const StoppingOptions& stopping) const;

 private:
  TextFrontend() = default;

  std::string dir_;
  std::shared_ptr<const Tokenizer> tokenizer_;   // shared with the open streams' sinks
  std::unique_ptr<ChatTemplate> chat_template_;  // null: the model publishes none
};

// google.protobuf.Struct as JSON, for template variables: whole numbers
// within +-2^53 become integers (Python's 1, not 1.0), object keys sorted.
nlohmann::ordered_json StructToJson(const google::protobuf::Struct& value);

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SERVER_TEXT_FRONTEND_H_
