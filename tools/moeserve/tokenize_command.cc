#include "tools/moeserve/tokenize_command.h"

#include <iterator>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "scheduler/tokenizer/tokenizer.h"
#include "scheduler/tokenizer/utf8.h"

namespace moeserve {
namespace {

using nlohmann::json;

std::string ReadAll(std::istream& in) {
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

absl::Status Tokenize(const std::string& tokenizer_dir, bool add_special_tokens, std::istream& in,
                      std::ostream& out) {
  // Input errors first: they need no tokenizer, which takes a while to load.
  const std::string text = ReadAll(in);
  if (absl::Status s = ValidateUtf8(text); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("stdin: ", s.message()));
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(tokenizer_dir);
  if (!tokenizer.ok()) return tokenizer.status();
  absl::StatusOr<std::vector<int32_t>> ids = (*tokenizer)->Encode(text, add_special_tokens);
  if (!ids.ok()) return absl::InvalidArgumentError(absl::StrCat("stdin: ", ids.status().message()));
  out << json(*ids).dump() << "\n";
  return absl::OkStatus();
}

absl::Status Detokenize(const std::string& tokenizer_dir, bool skip_special_tokens,
                        std::istream& in, std::ostream& out) {
  const json array = json::parse(ReadAll(in), nullptr, /*allow_exceptions=*/false);
  if (array.is_discarded() || !array.is_array()) {
    return absl::InvalidArgumentError(
        "stdin: expected a JSON array of token ids, e.g. [9707, 11, 1879]");
  }
  for (size_t i = 0; i < array.size(); ++i) {
    if (!array[i].is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat("stdin: element ", i, " is ", array[i].dump(), ", not a token id"));
    }
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(tokenizer_dir);
  if (!tokenizer.ok()) return tokenizer.status();
  const int32_t vocab = (*tokenizer)->vocab_size();
  std::vector<int32_t> ids;
  ids.reserve(array.size());
  for (size_t i = 0; i < array.size(); ++i) {
    const json& id = array[i];
    // Checked as int64: larger numbers would not fit an int32 id.
    if (id.get<int64_t>() < 0 || id.get<int64_t>() >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("stdin: token id ", id.dump(), " at position ",
                                                     i, " is outside the vocabulary [0, ", vocab,
                                                     ")"));
    }
    ids.push_back(id.get<int32_t>());
  }
  absl::StatusOr<std::string> text =
      (*tokenizer)->Decode(ids, {.skip_special_tokens = skip_special_tokens});
  if (!text.ok()) return text.status();
  out << *text;
  return absl::OkStatus();
}

}  // namespace moeserve
