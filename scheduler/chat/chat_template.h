// Renders a model's chat template: the Jinja2 template published in its
// tokenizer_config.json ("chat_template"), turned into the prompt text
// exactly as Hugging Face transformers' apply_chat_template(tokenize=False)
// does: same Jinja semantics (ImmutableSandboxedEnvironment, trim_blocks,
// lstrip_blocks, loop controls), same variables (messages, tools, documents,
// add_generation_prompt, the special tokens, extra kwargs), same `tojson`,
// `raise_exception` and `strftime_now`. See docs/chat_templates.md for what
// the interpreter supports.
//
// Thread safety: a ChatTemplate is immutable after creation; Render may be
// called concurrently from any number of threads on one instance.
#ifndef MOESERVE_SCHEDULER_CHAT_CHAT_TEMPLATE_H_
#define MOESERVE_SCHEDULER_CHAT_CHAT_TEMPLATE_H_

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace moeserve {

namespace jinja {
struct TemplateAst;
}

struct ChatOptions {
  // Ends the prompt with the assistant's turn header.
  bool add_generation_prompt = false;
  // Tool (function) schemas, a JSON list, passed as `tools`; unset passes
  // None, as transformers does without tools.
  std::optional<nlohmann::ordered_json> tools;
  // Retrieval documents passed as `documents`; unset passes None.
  std::optional<nlohmann::ordered_json> documents;
  // Further template variables, a JSON object: Qwen3's `enable_thinking`,
  // DeepSeek-V3.1's `thinking`, ... They override the special tokens; they
  // may not name messages, tools, documents or add_generation_prompt.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
  // Which of several named templates to use; empty: "tool_use" when tools are
  // given and the model has one, else "default" (transformers' rule).
  std::string template_name;
};

// The special tokens a template sees as variables (bos_token, ...); unset
// ones are undefined in the template.
struct ChatSpecialTokens {
  std::map<std::string, std::string> tokens;                        // e.g. {"bos_token", "<s>"}
  std::optional<nlohmann::ordered_json> additional_special_tokens;  // a list
};

class ChatTemplate {
 public:
  // Reads `chat_template` (a string, or a list of {name, template}) and the
  // special tokens (strings, or objects with "content") from a
  // tokenizer_config.json, given as the file or its directory. A
  // chat_template.jinja file beside it takes precedence, as in transformers.
  // Fails with NotFound when there is no file or no template, and
  // InvalidArgument naming the line for a template this interpreter cannot
  // run (syntax error, unsupported tag, unknown filter or test).
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> FromTokenizerConfig(
      const std::filesystem::path& path_or_dir);
  // From template source, with the same checks.
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> Create(const std::string& source,
                                                              ChatSpecialTokens special_tokens);
  // From several named templates, as some models publish ("default" must be
  // among them; "tool_use" is picked when tools are given).
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> CreateNamed(
      const std::map<std::string, std::string>& named, ChatSpecialTokens special_tokens);

  ~ChatTemplate();
  ChatTemplate(const ChatTemplate&) = delete;
  ChatTemplate& operator=(const ChatTemplate&) = delete;

  // The prompt for `messages` (a JSON list of {role, content, ...}; content
  // may be null, assistant messages may carry tool_calls and
  // reasoning_content). Key order inside the JSON is kept, as tojson prints
  // it (parse request JSON with nlohmann::ordered_json to keep the client's).
  // Errors are InvalidArgument: the template's own raise_exception message
  // verbatim (how templates reject a conversation), or "chat template line N:
  // ..." when rendering fails (e.g. a null content where the template needs
  // text, as Jinja would fail too).
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& messages,
                                     const ChatOptions& options) const;

  const ChatSpecialTokens& special_tokens() const { return special_tokens_; }
  // The source of the default template.
  const std::string& source() const;

 private:
  struct Parsed {
    std::string source;
    std::unique_ptr<jinja::TemplateAst> ast;
  };
  ChatTemplate() = default;

  std::map<std::string, Parsed> templates_;  // by name; "default" always present
  ChatSpecialTokens special_tokens_;
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_CHAT_CHAT_TEMPLATE_H_
