#include "scheduler/server/openai_protocol.h"

#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/util/json_util.h"

namespace moeserve {
namespace {

// Ordered: tool schemas and arguments reach the template in the client's key
// order, as transformers passes them.
using json = nlohmann::ordered_json;

constexpr char kParamPayload[] = "moeserve.dev/openai-param";

absl::Status Bad(absl::string_view param, std::string message) {
  return WithOpenAiParam(absl::InvalidArgumentError(std::move(message)), param);
}

const char* TypeName(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::string:
      return "a string";
    case json::value_t::array:
      return "an array";
    case json::value_t::object:
      return "an object";
    default:
      return "a number";
  }
}

absl::Status WrongType(absl::string_view param, absl::string_view want, const json& got) {
  return Bad(param, absl::StrCat(param, " must be ", want, ", got ", TypeName(got)));
}

// The field `key` of `body` when present and not null.
const json* Field(const json& body, const char* key) {
  auto it = body.find(key);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

absl::StatusOr<std::optional<double>> Number(const json& body, const char* key) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::optional<double>();
  if (!v->is_number()) return WrongType(key, "a number", *v);
  return std::optional<double>(v->get<double>());
}

// An integer (a JSON number without a fraction) in [lo, hi].
absl::StatusOr<int64_t> IntegerValue(absl::string_view param, const json& v, int64_t lo,
                                     int64_t hi) {
  if (!v.is_number()) return WrongType(param, "an integer", v);
  double d = v.get<double>();
  if (v.is_number_integer() && !v.is_number_unsigned()) d = static_cast<double>(v.get<int64_t>());
  if (v.is_number_float() && d != std::trunc(d)) return WrongType(param, "an integer", v);
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi)) {
    return Bad(param, absl::StrCat(param, " must be in [", lo, ", ", hi, "], got ",
                                   std::string(v.dump())));
  }
  if (!(d >= static_cast<double>(lo) && d <= static_cast<double>(hi))) {
    return Bad(param, absl::StrCat(param, " must be in [", lo, ", ", hi, "], got ",
                                   std::string(v.dump())));
  }
  return v.is_number_integer() ? v.get<int64_t>() : static_cast<int64_t>(d);
}

absl::StatusOr<std::optional<int64_t>> Integer(const json& body, const char* key, int64_t lo,
                                               int64_t hi) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::optional<int64_t>();
  auto i = IntegerValue(key, *v, lo, hi);
  if (!i.ok()) return i.status();
  return std::optional<int64_t>(*i);
}

absl::StatusOr<std::optional<bool>> Bool(const json& body, const char* key) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::optional<bool>();
  if (!v->is_boolean()) return WrongType(key, "a boolean", *v);
  return std::optional<bool>(v->get<bool>());
}

absl::StatusOr<std::optional<std::string>> String(const json& body, const char* key) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::optional<std::string>();
  if (!v->is_string()) return WrongType(key, "a string", *v);
  return std::optional<std::string>(v->get<std::string>());
}

// Sampling, stopping and logprobs: the fields chat and completions share.
absl::Status ParseSampling(const json& body, OpenAiRequest& out, v1::SamplingParams& s,
                           v1::StoppingCriteria& st) {
  for (const char* key : {"temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty",
                          "repetition_penalty"}) {
    auto value_or = Number(body, key);
    if (!value_or.ok()) return value_or.status();
    auto value = *std::move(value_or);
    if (!value.has_value()) continue;
    const float f = static_cast<float>(*value);
    const absl::string_view k(key);
    if (k == "temperature") s.set_temperature(f);
    if (k == "top_p") s.set_top_p(f);
    if (k == "min_p") s.set_min_p(f);
    if (k == "presence_penalty") s.set_presence_penalty(f);
    if (k == "frequency_penalty") s.set_frequency_penalty(f);
    if (k == "repetition_penalty") s.set_repetition_penalty(f);
  }
  auto top_k_or = Integer(body, "top_k", -1, std::numeric_limits<int32_t>::max());
  if (!top_k_or.ok()) return top_k_or.status();
  auto top_k = *std::move(top_k_or);
  // -1 is "off" for vLLM and SGLang clients; the proto's off is 0.
  if (top_k.has_value()) s.set_top_k(*top_k < 0 ? 0 : static_cast<int32_t>(*top_k));
  auto seed_or = Integer(body, "seed", std::numeric_limits<int64_t>::min(),
                         std::numeric_limits<int64_t>::max());
  if (!seed_or.ok()) return seed_or.status();
  auto seed = *std::move(seed_or);
  if (seed.has_value()) s.set_seed(static_cast<uint64_t>(*seed));
  if (const json* bias = Field(body, "logit_bias"); bias != nullptr) {
    if (!bias->is_object()) return WrongType("logit_bias", "an object", *bias);
    for (const auto& [key, value] : bias->items()) {
      uint32_t id = 0;
      if (!absl::SimpleAtoi(key, &id)) {
        return Bad("logit_bias", absl::StrCat("logit_bias key \"", key,
                                              "\" is not a token id (a non-negative integer)"));
      }
      if (!value.is_number()) {
        return WrongType(absl::StrCat("logit_bias[\"", key, "\"]"), "a number", value);
      }
      (*s.mutable_logit_bias())[id] = value.get<float>();
    }
  }

  // max_completion_tokens is the newer name; it wins when both are given.
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    auto max_tokens_or = Integer(body, key, 0, std::numeric_limits<uint32_t>::max());
    if (!max_tokens_or.ok()) return max_tokens_or.status();
    auto max_tokens = *std::move(max_tokens_or);
    if (max_tokens.has_value()) st.set_max_tokens(static_cast<uint32_t>(*max_tokens));
  }
  auto min_tokens_or = Integer(body, "min_tokens", 0, std::numeric_limits<uint32_t>::max());
  if (!min_tokens_or.ok()) return min_tokens_or.status();
  auto min_tokens = *std::move(min_tokens_or);
  if (min_tokens.has_value()) st.set_min_tokens(static_cast<uint32_t>(*min_tokens));
  if (const json* stop = Field(body, "stop"); stop != nullptr) {
    if (stop->is_string()) {
      st.add_stop(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (size_t i = 0; i < stop->size(); ++i) {
        if (!(*stop)[i].is_string()) {
          return WrongType(absl::StrCat("stop[", i, "]"), "a string", (*stop)[i]);
        }
        st.add_stop((*stop)[i].get<std::string>());
      }
    } else {
      return WrongType("stop", "a string or an array of strings", *stop);
    }
  }
  if (const json* ids = Field(body, "stop_token_ids"); ids != nullptr) {
    if (!ids->is_array()) return WrongType("stop_token_ids", "an array of token ids", *ids);
    for (size_t i = 0; i < ids->size(); ++i) {
      auto id_or = IntegerValue(absl::StrCat("stop_token_ids[", i, "]"), (*ids)[i], 0,
                                std::numeric_limits<uint32_t>::max());
      if (!id_or.ok()) return id_or.status();
      auto id = *std::move(id_or);
      st.add_stop_token_ids(static_cast<uint32_t>(id));
    }
  }
  auto ignore_eos_or = Bool(body, "ignore_eos");
  if (!ignore_eos_or.ok()) return ignore_eos_or.status();
  auto ignore_eos = *std::move(ignore_eos_or);
  st.set_ignore_eos(ignore_eos.value_or(false));

  auto n_or = Integer(body, "n", 1, kMaxOpenAiChoices);
  if (!n_or.ok()) return n_or.status();
  auto n = *std::move(n_or);
  out.n = static_cast<int32_t>(n.value_or(1));
  auto best_of_or = Integer(body, "best_of", 0, kMaxOpenAiChoices);
  if (!best_of_or.ok()) return best_of_or.status();
  auto best_of = *std::move(best_of_or);
  if (best_of.value_or(1) > 1 && *best_of != out.n) {
    return Bad(
        "best_of",
        "best_of is not supported: moeserve returns every sample; ask for n samples instead");
  }
  auto stream_or = Bool(body, "stream");
  if (!stream_or.ok()) return stream_or.status();
  auto stream = *std::move(stream_or);
  out.stream = stream.value_or(false);
  if (const json* options = Field(body, "stream_options"); options != nullptr) {
    if (!options->is_object()) return WrongType("stream_options", "an object", *options);
    auto usage_or = Bool(*options, "include_usage");
    if (!usage_or.ok()) return usage_or.status();
    auto usage = *std::move(usage_or);
    if (usage.has_value()) {
      out.include_usage = *usage;
    } else if (const json* u = Field(*options, "include_usage"); u != nullptr) {
      return WrongType("stream_options.include_usage", "a boolean", *u);
    }
  }
  if (const json* model = Field(body, "model"); model != nullptr) {
    if (!model->is_string()) return WrongType("model", "a string", *model);
    out.model = model->get<std::string>();
  }
  // user is accepted and not used.
  if (auto user = String(body, "user"); !user.ok()) return user.status();
  if (const json* format = Field(body, "response_format"); format != nullptr) {
    if (!format->is_object()) return WrongType("response_format", "an object", *format);
    const json* type = Field(*format, "type");
    if (type != nullptr && !(type->is_string() && type->get<std::string>() == "text")) {
      return Bad("response_format",
                 absl::StrCat("response_format ", type->dump(),
                              " is not supported: moeserve does not constrain output to JSON; "
                              "leave it unset or {\"type\": \"text\"}"));
    }
  }
  return absl::OkStatus();
}

// The logprobs fields: chat has a boolean and top_logprobs; completions an
// integer count of alternatives.
absl::Status ParseLogprobs(const json& body, OpenAiRequest& out) {
  if (out.endpoint == OpenAiEndpoint::kChatCompletions) {
    auto logprobs_or = Bool(body, "logprobs");
    if (!logprobs_or.ok()) return logprobs_or.status();
    auto logprobs = *std::move(logprobs_or);
    auto top_or = Integer(body, "top_logprobs", 0, 20);
    if (!top_or.ok()) return top_or.status();
    auto top = *std::move(top_or);
    out.logprobs = logprobs.value_or(false);
    out.top_logprobs = static_cast<int32_t>(top.value_or(0));
    if (out.top_logprobs > 0 && !out.logprobs) {
      return Bad("top_logprobs", "top_logprobs needs logprobs set to true");
    }
  } else {
    auto logprobs_or = Integer(body, "logprobs", 0, 20);
    if (!logprobs_or.ok()) return logprobs_or.status();
    auto logprobs = *std::move(logprobs_or);
    out.logprobs = logprobs.has_value();
    out.top_logprobs = static_cast<int32_t>(logprobs.value_or(0));
  }
  return absl::OkStatus();
}

// A message's content: a string, null, or text parts (joined with "\n", as
// vLLM joins them).
absl::StatusOr<std::string> MessageContent(const json& content, size_t i) {
  const std::string param = absl::StrCat("messages[", i, "].content");
  if (content.is_null()) return std::string();
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array())
    return WrongType(param, "a string or an array of content parts", content);
  std::vector<std::string> texts;
  for (size_t j = 0; j < content.size(); ++j) {
    const json& part = content[j];
    const std::string part_param = absl::StrCat(param, "[", j, "]");
    if (!part.is_object()) return WrongType(part_param, "an object", part);
    const json* type = Field(part, "type");
    if (type == nullptr || !type->is_string()) {
      return Bad(part_param, absl::StrCat(part_param, ".type must be a string"));
    }
    if (type->get<std::string>() != "text") {
      return Bad(part_param, absl::StrCat(part_param, " is of type ", type->dump(),
                                          ", which is not supported: this model takes text only"));
    }
    const json* text = Field(part, "text");
    if (text == nullptr || !text->is_string()) {
      return Bad(part_param, absl::StrCat(part_param, ".text must be a string"));
    }
    texts.push_back(text->get<std::string>());
  }
  return absl::StrJoin(texts, "\n");
}

// A message as the chat template reads it: role, content (a null content
// stays null where an assistant message carries tool calls, as DeepSeek-V3's
// template needs; elsewhere it is "", as vLLM makes it), and the fields
// templates use for tools and reasoning.
absl::Status TemplateMessage(const json& m, size_t i, json& messages) {
  json message = {{"role", m["role"]}};
  const json* calls = Field(m, "tool_calls");
  if (calls != nullptr) {
    const std::string param = absl::StrCat("messages[", i, "].tool_calls");
    if (!calls->is_array()) return WrongType(param, "an array", *calls);
    for (size_t k = 0; k < calls->size(); ++k) {
      const json& call = (*calls)[k];
      const json* function = call.is_object() ? Field(call, "function") : nullptr;
      const json* name =
          function != nullptr && function->is_object() ? Field(*function, "name") : nullptr;
      if (name == nullptr || !name->is_string()) {
        return Bad(param, absl::StrCat(param, "[", k, "].function.name must be a string"));
      }
    }
  }
  auto content = m.find("content");
  if (content == m.end() || content->is_null()) {
    message["content"] = calls != nullptr && m["role"] == "assistant" ? json(nullptr) : json("");
  } else {
    auto text = MessageContent(*content, i);
    if (!text.ok()) return text.status();
    message["content"] = *std::move(text);
  }
  for (const char* key : {"name", "tool_call_id", "reasoning_content"}) {
    const json* v = Field(m, key);
    if (v == nullptr) continue;
    if (!v->is_string()) {
      return WrongType(absl::StrCat("messages[", i, "].", key), "a string", *v);
    }
    message[key] = *v;
  }
  if (calls != nullptr) message["tool_calls"] = *calls;
  messages.push_back(std::move(message));
  return absl::OkStatus();
}

// tools reach the template; tool_choice says whether calls are parsed.
absl::Status ParseTools(const json& body, OpenAiRequest& out) {
  const json* tools = Field(body, "tools");
  if (tools == nullptr) return absl::OkStatus();
  if (!tools->is_array()) return WrongType("tools", "an array", *tools);
  for (size_t k = 0; k < tools->size(); ++k) {
    const json& tool = (*tools)[k];
    const json* function = tool.is_object() ? Field(tool, "function") : nullptr;
    const json* name =
        function != nullptr && function->is_object() ? Field(*function, "name") : nullptr;
    if (name == nullptr || !name->is_string()) {
      return Bad("tools", absl::StrCat("tools[", k, "].function.name must be a string"));
    }
  }
  if (tools->empty()) return absl::OkStatus();
  out.tools = *tools;
  const json* choice = Field(body, "tool_choice");
  if (choice == nullptr || (choice->is_string() && *choice == "auto")) {
    out.parse_tool_calls = true;
  } else if (!(choice->is_string() && *choice == "none")) {
    return Bad("tool_choice",
               absl::StrCat("tool_choice ", choice->dump(),
                            " is not supported: moeserve does not constrain decoding to a call; "
                            "use \"auto\" (the model decides) or \"none\""));
  }
  return absl::OkStatus();
}

absl::Status ParseChat(const json& body, OpenAiRequest& out) {
  v1::ChatRequest& chat = out.chat;
  const json* messages = Field(body, "messages");
  if (messages == nullptr) {
    return Bad("messages", "messages is missing: a chat needs at least one message");
  }
  if (!messages->is_array()) return WrongType("messages", "an array", *messages);
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    if (!m.is_object()) return WrongType(absl::StrCat("messages[", i, "]"), "an object", m);
    const json* role = Field(m, "role");
    if (role == nullptr || !role->is_string()) {
      return Bad(absl::StrCat("messages[", i, "].role"),
                 absl::StrCat("messages[", i, "].role must be a string"));
    }
    v1::ChatMessage* message = chat.add_messages();
    message->set_role(role->get<std::string>());
    absl::Status s = TemplateMessage(m, i, out.messages);
    if (!s.ok()) return s;
    auto it = m.find("content");
    if (it != m.end()) {
      auto content_or = MessageContent(*it, i);
      if (!content_or.ok()) return content_or.status();
      auto content = *std::move(content_or);
      message->set_content(std::move(content));
    }
  }
  auto add_generation_prompt_or = Bool(body, "add_generation_prompt");
  if (!add_generation_prompt_or.ok()) return add_generation_prompt_or.status();
  auto add_generation_prompt = *std::move(add_generation_prompt_or);
  if (add_generation_prompt.has_value()) chat.set_add_generation_prompt(*add_generation_prompt);
  if (const json* kwargs = Field(body, "chat_template_kwargs"); kwargs != nullptr) {
    if (!kwargs->is_object()) return WrongType("chat_template_kwargs", "an object", *kwargs);
    auto parsed =
        google::protobuf::util::JsonStringToMessage(kwargs->dump(), chat.mutable_template_kwargs());
    if (!parsed.ok()) {
      return Bad("chat_template_kwargs", absl::StrCat("chat_template_kwargs: ", parsed.ToString()));
    }
  }
  if (absl::Status s = ParseTools(body, out); !s.ok()) return s;
  auto priority_or = Integer(body, "priority", std::numeric_limits<int32_t>::min(),
                             std::numeric_limits<int32_t>::max());
  if (!priority_or.ok()) return priority_or.status();
  auto priority = *std::move(priority_or);
  chat.set_priority(static_cast<int32_t>(priority.value_or(0)));
  if (absl::Status s = ParseSampling(body, out, *chat.mutable_sampling(), *chat.mutable_stopping());
      !s.ok()) {
    return s;
  }
  return ParseLogprobs(body, out);
}

// One prompt: a string or token ids.
absl::StatusOr<v1::GenerateRequest> Prompt(const json& p, const std::string& param) {
  v1::GenerateRequest request;
  if (p.is_string()) {
    request.set_text(p.get<std::string>());
    return request;
  }
  if (!p.is_array()) return WrongType(param, "a string or an array of token ids", p);
  v1::TokenIds* ids = request.mutable_token_ids();
  for (size_t i = 0; i < p.size(); ++i) {
    auto id_or = IntegerValue(absl::StrCat(param, "[", i, "]"), p[i], 0,
                              std::numeric_limits<uint32_t>::max());
    if (!id_or.ok()) return id_or.status();
    auto id = *std::move(id_or);
    ids->add_ids(static_cast<uint32_t>(id));
  }
  return request;
}

absl::Status ParseCompletion(const json& body, OpenAiRequest& out) {
  const json* prompt = Field(body, "prompt");
  if (prompt == nullptr) return Bad("prompt", "prompt is missing");
  // A batch is an array of strings or of token-id arrays; a flat array of
  // numbers is one prompt of token ids.
  const bool batch = prompt->is_array() && !prompt->empty() &&
                     ((*prompt)[0].is_string() || (*prompt)[0].is_array());
  if (batch) {
    for (size_t i = 0; i < prompt->size(); ++i) {
      auto one_or = Prompt((*prompt)[i], absl::StrCat("prompt[", i, "]"));
      if (!one_or.ok()) return one_or.status();
      auto one = *std::move(one_or);
      out.prompts.push_back(std::move(one));
    }
  } else {
    auto one_or = Prompt(*prompt, "prompt");
    if (!one_or.ok()) return one_or.status();
    auto one = *std::move(one_or);
    out.prompts.push_back(std::move(one));
  }
  auto echo_or = Bool(body, "echo");
  if (!echo_or.ok()) return echo_or.status();
  auto echo = *std::move(echo_or);
  if (echo.value_or(false)) {
    return Bad("echo", "echo is not supported: the response carries the completion only");
  }
  auto suffix_or = String(body, "suffix");
  if (!suffix_or.ok()) return suffix_or.status();
  auto suffix = *std::move(suffix_or);
  if (suffix.has_value() && !suffix->empty()) {
    return Bad("suffix", "suffix is not supported: the served models do not fill in the middle");
  }
  auto priority_or = Integer(body, "priority", std::numeric_limits<int32_t>::min(),
                             std::numeric_limits<int32_t>::max());
  if (!priority_or.ok()) return priority_or.status();
  auto priority = *std::move(priority_or);
  v1::SamplingParams sampling;
  v1::StoppingCriteria stopping;
  if (absl::Status s = ParseSampling(body, out, sampling, stopping); !s.ok()) return s;
  if (absl::Status s = ParseLogprobs(body, out); !s.ok()) return s;
  for (v1::GenerateRequest& r : out.prompts) {
    *r.mutable_sampling() = sampling;
    *r.mutable_stopping() = stopping;
    r.set_priority(static_cast<int32_t>(priority.value_or(0)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, const std::string& body) {
  json parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return absl::InvalidArgumentError(
        "the request body is not valid JSON (send a JSON object with Content-Type: "
        "application/json)");
  }
  if (!parsed.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request body must be a JSON object, got ", TypeName(parsed)));
  }
  OpenAiRequest out;
  out.endpoint = endpoint;
  absl::Status s = endpoint == OpenAiEndpoint::kChatCompletions ? ParseChat(parsed, out)
                                                                : ParseCompletion(parsed, out);
  if (!s.ok()) return s;
  const int64_t prompts =
      endpoint == OpenAiEndpoint::kChatCompletions ? 1 : static_cast<int64_t>(out.prompts.size());
  if (prompts * out.n > kMaxOpenAiChoices) {
    return Bad("n", absl::StrCat("n (", out.n, ") times the number of prompts (", prompts,
                                 ") exceeds ", kMaxOpenAiChoices, " choices"));
  }
  return out;
}

absl::Status WithOpenAiParam(absl::Status status, absl::string_view param) {
  status.SetPayload(kParamPayload, absl::Cord(std::string(param)));
  return status;
}

std::string OpenAiErrorParam(const absl::Status& status) {
  if (auto param = status.GetPayload(kParamPayload); param.has_value()) {
    return std::string(*param);
  }
  // The gRPC validator's field names, mapped to OpenAI's.
  const std::string m(status.message());
  static const std::pair<const char*, const char*> kFields[] = {
      {"sampling.temperature", "temperature"},
      {"sampling.top_p", "top_p"},
      {"sampling.top_k", "top_k"},
      {"sampling.min_p", "min_p"},
      {"sampling.repetition_penalty", "repetition_penalty"},
      {"sampling.presence_penalty", "presence_penalty"},
      {"sampling.frequency_penalty", "frequency_penalty"},
      {"sampling.logit_bias", "logit_bias"},
      {"stopping.stop_token_ids", "stop_token_ids"},
      {"stopping.stop", "stop"},
      {"stopping.min_tokens", "min_tokens"},
      {"stopping.max_tokens", "max_tokens"},
      {"prompt (", "max_tokens"},
      {"logprobs must", "top_logprobs"},
      {"the prompt", "prompt"},
      {"prompt token", "prompt"},
      {"messages", "messages"},
      {"template_kwargs", "chat_template_kwargs"},
  };
  for (const auto& [prefix, param] : kFields) {
    if (absl::StartsWith(m, prefix)) return param;
  }
  return "";
}

int HttpStatusOf(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

nlohmann::ordered_json OpenAiError(const absl::Status& status) {
  const int http = HttpStatusOf(status);
  const char* type = "invalid_request_error";
  nlohmann::ordered_json code = nullptr;
  if (http == 401) code = "invalid_api_key";
  if (http == 404)
    code = status.message().find("model") != absl::string_view::npos ? "model_not_found"
                                                                     : "unknown_url";
  if (http == 429) {
    type = "rate_limit_error";
    code = "queue_full";
  }
  if (http >= 500) type = "server_error";
  if (http == 503) code = "unavailable";
  const std::string param = OpenAiErrorParam(status);
  nlohmann::ordered_json error = {
      {"message", std::string(status.message())},
      {"type", type},
      {"param", param.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(param)},
      {"code", code}};
  return {{"error", std::move(error)}};
}

std::string DumpJson(const nlohmann::ordered_json& value) {
  return value.dump(-1, ' ', false, nlohmann::detail::error_handler_t::replace);
}

}  // namespace moeserve
