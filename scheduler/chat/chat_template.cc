#include "scheduler/chat/chat_template.h"

#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "scheduler/chat/ast.h"
#include "scheduler/chat/builtins.h"
#include "scheduler/chat/evaluator.h"
#include "scheduler/chat/parser.h"
#include "scheduler/chat/str_cat.h"

namespace moeserve {
namespace {

absl::Status WithContext(const absl::Status& s, std::string_view context) {
  return absl::Status(s.code(), jinja::Cat(context, s.message()));
}

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(jinja::Cat("cannot open ", path.string()));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// A special token as tokenizer_config.json writes it: a string, or an
// AddedToken object {"content": "...", ...}; null means none.
std::optional<std::string> TokenText(const nlohmann::ordered_json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

ChatTemplate::~ChatTemplate() = default;

const std::string& ChatTemplate::source() const { return templates_.at("default").source; }

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Create(
    const std::string& source, ChatSpecialTokens special_tokens) {
  return CreateNamed({{"default", source}}, std::move(special_tokens));
}

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::CreateNamed(
    const std::map<std::string, std::string>& named, ChatSpecialTokens special_tokens) {
  if (named.find("default") == named.end()) {
    return absl::InvalidArgumentError("chat templates have no \"default\" template");
  }
  auto t = std::unique_ptr<ChatTemplate>(new ChatTemplate());
  for (const auto& [name, source] : named) {
    absl::StatusOr<std::unique_ptr<jinja::TemplateAst>> ast = jinja::Compile(source);
    if (!ast.ok()) {
      return WithContext(ast.status(), jinja::Cat("chat template \"", name, "\", "));
    }
    t->templates_[name] = Parsed{source, *std::move(ast)};
  }
  t->special_tokens_ = std::move(special_tokens);
  return t;
}

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::FromTokenizerConfig(
    const std::filesystem::path& path_or_dir) {
  std::error_code ec;
  const bool is_dir = std::filesystem::is_directory(path_or_dir, ec);
  const std::filesystem::path config_path =
      is_dir ? path_or_dir / "tokenizer_config.json" : path_or_dir;
  absl::StatusOr<std::string> text = ReadFile(config_path);
  if (!text.ok()) return text.status();
  const nlohmann::ordered_json config = nlohmann::ordered_json::parse(*text, nullptr, false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(jinja::Cat(config_path.string(), " is not a JSON object"));
  }
  ChatSpecialTokens special;
  for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                          "cls_token", "mask_token"}) {
    if (!config.contains(key)) continue;
    if (std::optional<std::string> token = TokenText(config[key])) special.tokens[key] = *token;
  }
  if (config.contains("additional_special_tokens") &&
      config["additional_special_tokens"].is_array()) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const auto& item : config["additional_special_tokens"]) {
      if (std::optional<std::string> token = TokenText(item)) list.push_back(*token);
    }
    special.additional_special_tokens = std::move(list);
  }

  std::map<std::string, std::string> named;
  const std::filesystem::path jinja_file = config_path.parent_path() / "chat_template.jinja";
  if (std::filesystem::exists(jinja_file, ec)) {
    absl::StatusOr<std::string> source = ReadFile(jinja_file);
    if (!source.ok()) return source.status();
    named["default"] = *std::move(source);
  } else if (config.contains("chat_template") && config["chat_template"].is_string()) {
    named["default"] = config["chat_template"].get<std::string>();
  } else if (config.contains("chat_template") && config["chat_template"].is_array()) {
    for (const auto& item : config["chat_template"]) {
      if (!item.is_object() || !item.contains("name") || !item.contains("template") ||
          !item["name"].is_string() || !item["template"].is_string()) {
        return absl::InvalidArgumentError(jinja::Cat(
            config_path.string(), ": chat_template list items must be {name, template}"));
      }
      named[item["name"].get<std::string>()] = item["template"].get<std::string>();
    }
  } else {
    return absl::NotFoundError(jinja::Cat(config_path.string(), " has no chat_template"));
  }
  absl::StatusOr<std::unique_ptr<ChatTemplate>> t = CreateNamed(named, std::move(special));
  if (!t.ok()) return WithContext(t.status(), jinja::Cat(config_path.string(), ": "));
  return t;
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& messages,
                                                 const ChatOptions& options) const {
  if (!messages.is_array()) return absl::InvalidArgumentError("messages must be a JSON list");
  if (!options.extra.is_object()) {
    return absl::InvalidArgumentError("chat template kwargs must be a JSON object");
  }
  std::string name = options.template_name;
  if (name.empty()) {
    name = options.tools && templates_.count("tool_use") > 0 ? "tool_use" : "default";
  }
  const auto it = templates_.find(name);
  if (it == templates_.end()) {
    return absl::InvalidArgumentError(
        jinja::Cat("the model has no chat template named \"", name, "\""));
  }

  // The variables transformers passes: render(messages=..., tools=...,
  // documents=..., add_generation_prompt=..., **special_tokens, **kwargs).
  std::vector<std::pair<std::string, jinja::Value>> vars;
  auto add_json = [&vars](std::string key, const nlohmann::ordered_json& json) -> absl::Status {
    absl::StatusOr<jinja::Value> v = jinja::Value::FromJson(json);
    if (!v.ok()) return WithContext(v.status(), jinja::Cat(key, ": "));
    for (auto& [k, existing] : vars) {
      if (k == key) {
        existing = *std::move(v);
        return absl::OkStatus();
      }
    }
    vars.emplace_back(std::move(key), *std::move(v));
    return absl::OkStatus();
  };
  std::vector<std::pair<std::string, const nlohmann::ordered_json*>> inputs;
  const nlohmann::ordered_json none;
  const nlohmann::ordered_json generation_prompt(options.add_generation_prompt);
  inputs.emplace_back("messages", &messages);
  inputs.emplace_back("tools", options.tools ? &*options.tools : &none);
  inputs.emplace_back("documents", options.documents ? &*options.documents : &none);
  inputs.emplace_back("add_generation_prompt", &generation_prompt);
  for (const auto& [key, json] : inputs) {
    if (absl::Status s = add_json(key, *json); !s.ok()) return s;
  }
  for (const auto& [key, token] : special_tokens_.tokens) {
    vars.emplace_back(key, jinja::Value::String(token));
  }
  if (special_tokens_.additional_special_tokens) {
    if (absl::Status s =
            add_json("additional_special_tokens", *special_tokens_.additional_special_tokens);
        !s.ok()) {
      return s;
    }
  }
  for (const auto& [key, value] : options.extra.items()) {
    if (key == "messages" || key == "tools" || key == "documents" ||
        key == "add_generation_prompt") {
      return absl::InvalidArgumentError(
          jinja::Cat("chat template kwarg '", key, "' must be passed as its own option"));
    }
    if (absl::Status s = add_json(key, value); !s.ok()) return s;
  }

  jinja::Renderer renderer(*it->second.ast, jinja::RenderLimits());
  absl::StatusOr<std::string> text = renderer.Render(std::move(vars));
  if (!text.ok() && !jinja::IsTemplateRaisedError(text.status())) {
    return WithContext(text.status(), "chat template ");
  }
  return text;
}

}  // namespace moeserve
