#include "scheduler/server/text_frontend.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "scheduler/server/text_response_sink.h"

namespace moeserve {
namespace {

nlohmann::ordered_json ValueToJson(const google::protobuf::Value& v) {
  switch (v.kind_case()) {
    case google::protobuf::Value::kNumberValue: {
      const double d = v.number_value();
      if (std::isfinite(d) && d == std::trunc(d) && std::fabs(d) <= 9007199254740992.0) {
        return static_cast<int64_t>(d);
      }
      return d;
    }
    case google::protobuf::Value::kStringValue:
      return v.string_value();
    case google::protobuf::Value::kBoolValue:
      return v.bool_value();
    case google::protobuf::Value::kStructValue:
      return StructToJson(v.struct_value());
    case google::protobuf::Value::kListValue: {
      nlohmann::ordered_json list = nlohmann::ordered_json::array();
      for (const google::protobuf::Value& item : v.list_value().values()) {
        list.push_back(ValueToJson(item));
      }
      return list;
    }
    default:  // null, or unset
      return nullptr;
  }
}

}  // namespace

nlohmann::ordered_json StructToJson(const google::protobuf::Struct& value) {
  std::vector<const std::string*> keys;
  for (const auto& entry : value.fields()) keys.push_back(&entry.first);
  std::sort(keys.begin(), keys.end(), [](const auto* a, const auto* b) { return *a < *b; });
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const std::string* key : keys) out[*key] = ValueToJson(value.fields().at(*key));
  return out;
}

absl::StatusOr<std::unique_ptr<TextFrontend>> TextFrontend::Load(const std::string& dir) {
  auto tokenizer = Tokenizer::Load(dir);
  if (!tokenizer.ok()) return tokenizer.status();
  std::unique_ptr<TextFrontend> text(new TextFrontend());
  text->dir_ = dir;
  text->tokenizer_ = *std::move(tokenizer);
  auto chat_template = ChatTemplate::FromTokenizerConfig(dir);
  if (chat_template.ok()) {
    text->chat_template_ = *std::move(chat_template);
  } else if (chat_template.status().code() != absl::StatusCode::kNotFound) {
    return absl::Status(chat_template.status().code(),
                        absl::StrCat("the chat template in ", dir,
                                     "/tokenizer_config.json: ", chat_template.status().message()));
  }
  return text;
}

absl::Status TextFrontend::CheckModelVocab(int64_t model_vocab_size, const std::string& who) const {
  if (tokenizer_->vocab_size() <= model_vocab_size) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      who, " serves a model with a vocabulary of ", model_vocab_size,
      " tokens, but the coordinator's tokenizer (--tokenizer ", dir_, ") has token ids up to ",
      tokenizer_->vocab_size() - 1,
      ": it is not this model's tokenizer. Start the coordinator with --tokenizer pointing at "
      "the served model's directory"));
}

absl::StatusOr<std::vector<int32_t>> TextFrontend::Encode(const std::string& text,
                                                          bool add_special_tokens) const {
  return tokenizer_->Encode(text, add_special_tokens);
}

absl::StatusOr<std::string> TextFrontend::RenderChat(const v1::ChatRequest& request) const {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  for (const v1::ChatMessage& m : request.messages()) {
    messages.push_back({{"role", m.role()}, {"content", m.content()}});
  }
  return RenderChat(messages, std::nullopt, request);
}

absl::StatusOr<std::string> TextFrontend::RenderChat(
    const nlohmann::ordered_json& messages, const std::optional<nlohmann::ordered_json>& tools,
    const v1::ChatRequest& request) const {
  if (chat_template_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("the model's tokenizer_config.json (", dir_,
                     ") has no chat_template, so Chat is not available; use Generate with text"));
  }
  if (messages.empty()) {
    return absl::InvalidArgumentError("messages is empty: a chat needs at least one message");
  }
  ChatOptions options;
  options.add_generation_prompt =
      request.has_add_generation_prompt() ? request.add_generation_prompt() : true;
  options.tools = tools;
  options.extra = StructToJson(request.template_kwargs());
  for (const char* reserved : {"messages", "tools", "documents", "add_generation_prompt"}) {
    if (options.extra.contains(reserved)) {
      return absl::InvalidArgumentError(
          absl::StrCat("template_kwargs may not set \"", reserved,
                       "\": it is a field of the request or not supported"));
    }
  }
  if (request.has_enable_thinking()) options.extra["enable_thinking"] = request.enable_thinking();
  return chat_template_->Render(messages, options);
}

std::shared_ptr<ResponseSink> TextFrontend::WrapSink(std::shared_ptr<ResponseSink> inner,
                                                     const StoppingOptions& stopping) const {
  TextStream::Options options;
  options.stop = stopping.stop;
  options.min_tokens = stopping.min_tokens;
  options.skip_special_tokens = true;
  return std::make_shared<TextResponseSink>(std::move(inner), tokenizer_, std::move(options));
}

}  // namespace moeserve
