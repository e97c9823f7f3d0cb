#include "scheduler/tokenizer/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "scheduler/tokenizer/byte_level.h"
#include "scheduler/tokenizer/special_tokens.h"
#include "scheduler/tokenizer/string_view_compat.h"
#include "scheduler/tokenizer/utf8.h"

namespace moeserve {
namespace {

using nlohmann::json;

// Larger ids would make the per-id tables (and Load) absurd; published
// vocabularies have up to a few hundred thousand tokens.
constexpr int32_t kMaxTokens = 1 << 24;

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path.string(), ": cannot open"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path.string(), ": read failed"));
  return text.str();
}

absl::StatusOr<json> ParseJson(std::string_view text, const std::string& file,
                               const json::parser_callback_t& callback = nullptr) {
  try {
    return json::parse(text, callback);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": malformed JSON: ", e.what()));
  }
}

// Parses tokenizer.json, moving the entries of model.vocab to `*vocab`
// instead of the document: a JSON object of 150k entries takes longer to
// build than everything else the loader does.
absl::StatusOr<json> ParseTokenizerJson(std::string_view text, const std::string& file,
                                        BpeModel::VocabEntries* vocab) {
  // Depth counts the containers open around an event: 1 for the top-level
  // object's keys, 2 inside "model", 3 inside "model.vocab".
  std::string top_key, model_key, token;
  const auto in_vocab = [&](int depth) {
    return depth == 3 && top_key == "model" && model_key == "vocab";
  };
  return ParseJson(text, file, [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key) {
      if (depth == 1) top_key = parsed.get<std::string>();
      if (depth == 2) model_key = parsed.get<std::string>();
      if (!in_vocab(depth)) return true;
      token = parsed.get<std::string>();
      return false;  // keeps the pair out of the document
    }
    if (event == json::parse_event_t::value && in_vocab(depth)) {
      vocab->emplace_back(std::move(token), std::move(parsed));
      return false;
    }
    return true;
  });
}

// j[key], or null when j has no such key (without copying, unlike value()).
const json& Member(const json& j, const char* key) {
  static const json* const kNull = new json();
  const auto it = j.find(key);
  return it == j.end() ? *kNull : *it;
}

// Prefixes an error with the file it is about.
absl::Status InFile(const std::string& file, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat(file, ": ", status.message()));
}

absl::StatusOr<std::vector<AddedToken>> ParseAddedTokens(const json& tokenizer) {
  std::vector<AddedToken> tokens;
  const auto it = tokenizer.find("added_tokens");
  if (it == tokenizer.end() || it->is_null()) return tokens;
  if (!it->is_array()) return absl::InvalidArgumentError("added_tokens: expected an array");
  for (size_t i = 0; i < it->size(); ++i) {
    const json& t = (*it)[i];
    const std::string where = absl::StrCat("added_tokens[", i, "]");
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
        !t.contains("content") || !t["content"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": expected an object with an integer \"id\" and a \"content\""));
    }
    const int64_t id = t["id"].get<int64_t>();
    if (id < 0 || id > INT32_MAX) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": id ", id, " is out of range"));
    }
    AddedToken token;
    token.id = static_cast<int32_t>(id);
    token.content = t["content"].get<std::string>();
    if (absl::Status s = ValidateUtf8(token.content); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".content: ", s.message()));
    }
    const auto flag = [&](const char* key) {
      return t.contains(key) && t[key].is_boolean() && t[key].get<bool>();
    };
    token.single_word = flag("single_word");
    token.lstrip = flag("lstrip");
    token.rstrip = flag("rstrip");
    token.normalized = flag("normalized");
    token.special = flag("special");
    tokens.push_back(std::move(token));
  }
  return tokens;
}

// Only the ByteLevel decoder (alone or as the one step of a Sequence) is
// supported: it is the inverse of the ByteLevel pre-tokenizer.
absl::Status CheckDecoder(const json& tokenizer) {
  const auto it = tokenizer.find("decoder");
  const json* decoder = it == tokenizer.end() ? nullptr : &*it;
  std::string field = "decoder";
  if (decoder != nullptr && decoder->is_object() && decoder->value("type", "") == "Sequence" &&
      decoder->contains("decoders") && (*decoder)["decoders"].is_array() &&
      (*decoder)["decoders"].size() == 1) {
    decoder = &(*decoder)["decoders"][0];
    field = "decoder.decoders[0]";
  }
  if (decoder == nullptr || decoder->is_null()) {
    return absl::InvalidArgumentError(
        "decoder: null is not supported (only byte-level BPE tokenizers are)");
  }
  const std::string type = decoder->is_object() ? decoder->value("type", "") : "";
  if (type != "ByteLevel") {
    return absl::InvalidArgumentError(absl::StrCat(field, ": decoder type \"", type,
                                                   "\" is not supported (supported: ByteLevel)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& dir) {
  const std::filesystem::path base(dir);
  absl::StatusOr<std::string> tokenizer = ReadFile(base / "tokenizer.json");
  if (!tokenizer.ok()) return tokenizer.status();
  absl::StatusOr<std::string> config = ReadFile(base / "tokenizer_config.json");
  if (!config.ok()) return config.status();
  return FromJson(*tokenizer, *config, (base / "").string());
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view tokenizer_json,
                                                               std::string_view tokenizer_config,
                                                               const std::string& source) {
  const std::string tokenizer_file = source + "tokenizer.json";
  const std::string config_file = source + "tokenizer_config.json";
  BpeModel::VocabEntries vocab;
  absl::StatusOr<json> tj = ParseTokenizerJson(tokenizer_json, tokenizer_file, &vocab);
  if (!tj.ok()) return tj.status();
  absl::StatusOr<json> cj = ParseJson(tokenizer_config, config_file);
  if (!cj.ok()) return cj.status();
  if (!tj->is_object()) return absl::InvalidArgumentError(tokenizer_file + ": expected an object");

  std::unique_ptr<Tokenizer> t(new Tokenizer);
  std::vector<AddedToken> added;
  TokenizerConfig config;
  // nlohmann throws on type mismatches that the checks below missed; those
  // become errors too.
  try {
    for (const char* key : {"truncation", "padding"}) {
      if (tj->contains(key) && !(*tj)[key].is_null()) {
        return absl::InvalidArgumentError(
            absl::StrCat(tokenizer_file, ": ", key, ": only null is supported"));
      }
    }
    absl::StatusOr<std::unique_ptr<BpeModel>> bpe =
        BpeModel::FromJson(Member(*tj, "model"), "model", &vocab);
    if (!bpe.ok()) return InFile(tokenizer_file, bpe.status());
    t->bpe_ = *std::move(bpe);
    absl::StatusOr<Normalizer> normalizer =
        Normalizer::FromJson(Member(*tj, "normalizer"), "normalizer");
    if (!normalizer.ok()) return InFile(tokenizer_file, normalizer.status());
    t->normalizer_ = *std::move(normalizer);
    absl::StatusOr<PreTokenizer> pre =
        PreTokenizer::FromJson(Member(*tj, "pre_tokenizer"), "pre_tokenizer");
    if (!pre.ok()) return InFile(tokenizer_file, pre.status());
    t->pre_tokenizer_ = *std::move(pre);
    if (absl::Status s = CheckDecoder(*tj); !s.ok()) return InFile(tokenizer_file, s);
    absl::StatusOr<std::vector<AddedToken>> tokens = ParseAddedTokens(*tj);
    if (!tokens.ok()) return InFile(tokenizer_file, tokens.status());
    added = *std::move(tokens);
    absl::StatusOr<TokenizerConfig> parsed = ParseTokenizerConfig(*cj);
    if (!parsed.ok()) return InFile(config_file, parsed.status());
    config = *std::move(parsed);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(tokenizer_file, ": ", e.what()));
  }

  if (absl::Status s = t->BuildIdTables(added); !s.ok()) return InFile(tokenizer_file, s);
  if (absl::Status s = t->MarkSpecialTokens(added, config); !s.ok()) return InFile(config_file, s);
  const auto lookup = [&](const std::string& token) { return t->TokenToId(token); };
  try {
    absl::StatusOr<SpecialTokenTemplate> tmpl = BuildSpecialTokenTemplate(
        config, Member(*tj, "post_processor"), lookup, config_file, tokenizer_file);
    if (!tmpl.ok()) return tmpl.status();
    t->prefix_ids_ = std::move(tmpl->prefix);
    t->suffix_ids_ = std::move(tmpl->suffix);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(tokenizer_file, ": post_processor: ", e.what()));
  }
  for (const std::vector<int32_t>* list : {&t->prefix_ids_, &t->suffix_ids_}) {
    for (int32_t id : *list) {
      if (!t->HasToken(id)) {
        return absl::InvalidArgumentError(absl::StrCat(
            tokenizer_file, ": post_processor: token id ", id, " is not in the vocabulary"));
      }
    }
  }

  std::vector<AddedToken> raw, normalized;
  for (AddedToken& a : added) (a.normalized ? normalized : raw).push_back(std::move(a));
  t->raw_added_ = std::make_unique<AddedTokenMatcher>(raw);
  t->normalized_added_ = std::make_unique<AddedTokenMatcher>(normalized);
  t->split_special_tokens_ = config.split_special_tokens;
  return t;
}

absl::Status Tokenizer::BuildIdTables(const std::vector<AddedToken>& added) {
  // Ids: the model's vocabulary, then the added tokens over it.
  int64_t largest = -1;
  for (const auto& [token, id] : bpe_->vocab()) largest = std::max<int64_t>(largest, id);
  for (const AddedToken& a : added) largest = std::max<int64_t>(largest, a.id);
  if (largest >= kMaxTokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the largest token id is ", largest, "; at most ", kMaxTokens, " tokens are supported"));
  }
  const auto size = static_cast<int32_t>(largest + 1);
  id_tokens_.resize(size);
  has_token_.assign(size, false);
  is_special_.assign(size, false);
  for (const auto& [token, id] : bpe_->vocab()) {
    id_tokens_[id] = token;
    has_token_[id] = true;
  }
  for (const AddedToken& a : added) {
    id_tokens_[a.id] = a.content;
    has_token_[a.id] = true;
    added_ids_[a.content] = a.id;
  }
  // What each id decodes to, as the ByteLevel decoder has it: the bytes its
  // characters stand for, or the token's own UTF-8 when one is outside the
  // byte alphabet (special tokens like "<｜begin▁of▁sentence｜>").
  id_bytes_.resize(size);
  for (int32_t id = 0; id < size; ++id) {
    std::optional<std::string> bytes = ByteLevelToBytes(id_tokens_[id]);
    id_bytes_[id] = bytes.has_value() ? *std::move(bytes) : id_tokens_[id];
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::MarkSpecialTokens(const std::vector<AddedToken>& added,
                                          const TokenizerConfig& config) {
  for (const AddedToken& a : added) {
    if (a.special) is_special_[a.id] = true;
  }
  // The tokens the config names are special too.
  std::vector<std::pair<std::string, std::optional<std::string>>> named = {
      {"bos_token", config.bos_token},
      {"eos_token", config.eos_token},
      {"pad_token", config.pad_token},
      {"unk_token", config.unk_token}};
  for (size_t i = 0; i < config.additional_special_tokens.size(); ++i) {
    named.emplace_back(absl::StrCat("additional_special_tokens[", i, "]"),
                       config.additional_special_tokens[i]);
  }
  for (const auto& [field, content] : named) {
    if (!content.has_value()) continue;
    const std::optional<int32_t> id = TokenToId(*content);
    if (!id.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": \"", *content, "\" is not a token of tokenizer.json"));
    }
    is_special_[*id] = true;
    if (field == "bos_token") bos_id_ = id;
    if (field == "eos_token") eos_id_ = id;
    if (field == "pad_token") pad_id_ = id;
  }
  for (int32_t id = 0; id < vocab_size(); ++id) {
    if (is_special_[id]) special_ids_.push_back(id);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text,
                                                       bool add_special_tokens) const {
  if (absl::Status s = ValidateUtf8(text); !s.ok()) return s;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) ids = prefix_ids_;
  raw_added_->Split(
      text, split_special_tokens_, [&](std::string_view run) { EncodeRun(run, &ids); },
      [&](int32_t id) { ids.push_back(id); });
  if (add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
  return ids;
}

void Tokenizer::EncodeRun(std::string_view run, std::vector<int32_t>* ids) const {
  std::string normalized;
  if (normalizer_.Normalize(run, &normalized)) run = normalized;
  normalized_added_->Split(
      run, split_special_tokens_,
      [&](std::string_view piece) {
        pre_tokenizer_.Split(piece, [&](std::string_view word) { bpe_->Encode(word, ids); });
      },
      [&](int32_t id) { ids->push_back(id); });
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              const DecodeOptions& options) const {
  std::string bytes;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " at position ", i, " is negative"));
    }
    if (!HasToken(id) || (options.skip_special_tokens && is_special_[id])) continue;
    bytes.append(id_bytes_[id]);
  }
  std::string text;
  text.reserve(bytes.size());
  AppendUtf8Lossy(bytes, &text);
  return text;
}

std::optional<std::string_view> Tokenizer::IdToToken(int32_t id) const {
  if (!HasToken(id)) return std::nullopt;
  return id_tokens_[id];
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  if (const auto it = added_ids_.find(AsAbsl(token)); it != added_ids_.end()) return it->second;
  if (const auto it = bpe_->vocab().find(AsAbsl(token)); it != bpe_->vocab().end())
    return it->second;
  return std::nullopt;
}

}  // namespace moeserve
