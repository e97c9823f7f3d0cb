#include "scheduler/tokenizer/special_tokens.h"

#include <array>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace moeserve {
namespace {

using nlohmann::json;

absl::Status FieldError(absl::string_view field, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", message));
}

// A token named in tokenizer_config.json: "content" or
// {"__type": "AddedToken", "content": "..."}; null and absent are nullopt.
absl::StatusOr<std::optional<std::string>> NamedToken(const json& config, const std::string& key) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return FieldError(key,
                    absl::StrCat("expected a string or an AddedToken object, got ", it->dump()));
}

absl::StatusOr<std::optional<bool>> OptionalBool(const json& config, const char* key) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean())
    return FieldError(key, absl::StrCat("expected true or false, got ", it->dump()));
  return it->get<bool>();
}

// Tokenizer classes whose transformers implementation rebuilds the
// post-processor from add_bos_token / add_eos_token.
constexpr std::array<std::string_view, 7> kBosEosClasses = {
    "LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer", "CodeLlamaTokenizerFast",
    "GemmaTokenizer", "GemmaTokenizerFast", "CohereTokenizerFast"};

// Adds `processor`'s single-sequence template to `*out` (field: its path).
absl::Status AddPostProcessor(const json& processor, const std::string& field,
                              SpecialTokenTemplate* out) {
  if (processor.is_null()) return absl::OkStatus();
  if (!processor.is_object() || !processor.contains("type") || !processor["type"].is_string()) {
    return FieldError(field, "expected an object with a \"type\"");
  }
  const std::string type = processor["type"].get<std::string>();
  if (type == "ByteLevel") return absl::OkStatus();  // offsets only
  if (type == "Sequence") {
    const auto it = processor.find("processors");
    if (it == processor.end() || !it->is_array()) {
      return FieldError(absl::StrCat(field, ".processors"), "expected an array");
    }
    for (size_t i = 0; i < it->size(); ++i) {
      absl::Status s = AddPostProcessor((*it)[i], absl::StrCat(field, ".processors[", i, "]"), out);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (type != "TemplateProcessing") {
    return FieldError(field, absl::StrCat("post-processor type \"", type,
                                          "\" is not supported (supported: ByteLevel, "
                                          "TemplateProcessing, Sequence)"));
  }
  const auto single = processor.find("single");
  const auto specials = processor.find("special_tokens");
  if (single == processor.end() || !single->is_array()) {
    return FieldError(absl::StrCat(field, ".single"), "expected an array");
  }
  if (!out->prefix.empty() || !out->suffix.empty()) {
    return FieldError(field, "more than one TemplateProcessing is not supported");
  }
  bool seen_sequence = false;
  for (size_t i = 0; i < single->size(); ++i) {
    const json& piece = (*single)[i];
    const std::string where = absl::StrCat(field, ".single[", i, "]");
    if (piece.contains("Sequence")) {
      if (seen_sequence) return FieldError(where, "a second sequence in a single template");
      seen_sequence = true;
      continue;
    }
    if (!piece.contains("SpecialToken") || !piece["SpecialToken"].contains("id") ||
        !piece["SpecialToken"]["id"].is_string()) {
      return FieldError(where, "expected {\"Sequence\": ...} or {\"SpecialToken\": {\"id\": ...}}");
    }
    const std::string name = piece["SpecialToken"]["id"].get<std::string>();
    if (specials == processor.end() || !specials->contains(name) ||
        !(*specials)[name].contains("ids") || !(*specials)[name]["ids"].is_array()) {
      return FieldError(absl::StrCat(field, ".special_tokens"),
                        absl::StrCat("no ids for \"", name, "\""));
    }
    for (const json& id : (*specials)[name]["ids"]) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
        return FieldError(absl::StrCat(field, ".special_tokens[\"", name, "\"].ids"),
                          absl::StrCat("id ", id.dump(), " is not a token id"));
      }
      (seen_sequence ? out->suffix : out->prefix).push_back(id.get<int32_t>());
    }
  }
  if (!seen_sequence) return FieldError(absl::StrCat(field, ".single"), "has no sequence");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TokenizerConfig> ParseTokenizerConfig(const json& config) {
  if (!config.is_object()) return absl::InvalidArgumentError("expected a JSON object");
  TokenizerConfig out;
  const std::pair<const char*, std::optional<std::string>*> named[] = {
      {"bos_token", &out.bos_token},
      {"eos_token", &out.eos_token},
      {"pad_token", &out.pad_token},
      {"unk_token", &out.unk_token}};
  for (const auto& [key, slot] : named) {
    absl::StatusOr<std::optional<std::string>> token = NamedToken(config, key);
    if (!token.ok()) return token.status();
    *slot = *std::move(token);
  }
  if (const auto it = config.find("additional_special_tokens");
      it != config.end() && !it->is_null()) {
    if (!it->is_array()) return FieldError("additional_special_tokens", "expected an array");
    for (size_t i = 0; i < it->size(); ++i) {
      const json& t = (*it)[i];
      if (t.is_string()) {
        out.additional_special_tokens.push_back(t.get<std::string>());
      } else if (t.is_object() && t.contains("content") && t["content"].is_string()) {
        out.additional_special_tokens.push_back(t["content"].get<std::string>());
      } else {
        return FieldError(absl::StrCat("additional_special_tokens[", i, "]"),
                          "expected a string or an AddedToken object");
      }
    }
  }
  if (const auto it = config.find("tokenizer_class"); it != config.end() && it->is_string()) {
    out.tokenizer_class = it->get<std::string>();
  }
  for (const auto& [key, slot] : {std::pair{"add_bos_token", &out.add_bos_token},
                                  std::pair{"add_eos_token", &out.add_eos_token}}) {
    absl::StatusOr<std::optional<bool>> flag = OptionalBool(config, key);
    if (!flag.ok()) return flag.status();
    *slot = *flag;
  }
  absl::StatusOr<std::optional<bool>> split = OptionalBool(config, "split_special_tokens");
  if (!split.ok()) return split.status();
  out.split_special_tokens = split->value_or(false);
  absl::StatusOr<std::optional<bool>> clean_up =
      OptionalBool(config, "clean_up_tokenization_spaces");
  if (!clean_up.ok()) return clean_up.status();
  if (clean_up->value_or(false)) {
    return FieldError("clean_up_tokenization_spaces", "true is not supported");
  }
  return out;
}

absl::StatusOr<SpecialTokenTemplate> BuildSpecialTokenTemplate(
    const TokenizerConfig& config, const json& post_processor,
    absl::FunctionRef<std::optional<int32_t>(const std::string&)> token_id,
    const std::string& config_file, const std::string& tokenizer_file) {
  SpecialTokenTemplate out;
  bool bos_eos_class = false;
  for (std::string_view c : kBosEosClasses) bos_eos_class |= config.tokenizer_class == c;
  if (!bos_eos_class) {
    absl::Status s = AddPostProcessor(post_processor, "post_processor", &out);
    if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(tokenizer_file, ": ", s.message()));
    return out;
  }
  const bool add_bos = config.add_bos_token.value_or(true);
  const bool add_eos = config.add_eos_token.value_or(false);
  for (const auto& [add, token, key, list] :
       {std::tuple{add_bos, &config.bos_token, "bos_token", &out.prefix},
        std::tuple{add_eos, &config.eos_token, "eos_token", &out.suffix}}) {
    if (!add) continue;
    if (!token->has_value()) {
      return FieldError(absl::StrCat(config_file, ": ", key),
                        absl::StrCat("is not set, but add_", std::string(key).substr(0, 3),
                                     "_token is true for ", config.tokenizer_class));
    }
    const std::optional<int32_t> id = token_id(**token);
    if (!id.has_value()) {
      return FieldError(absl::StrCat(config_file, ": ", key),
                        absl::StrCat("\"", **token, "\" is not a token of tokenizer.json"));
    }
    list->push_back(*id);
  }
  return out;
}

}  // namespace moeserve
