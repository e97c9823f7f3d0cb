// Added tokens (tokenizer.json "added_tokens": the special tokens and the
// extra ones like "<think>") are found in the text before the model sees it,
// as Hugging Face's AddedVocabulary finds them: leftmost-longest matches of
// their exact content; `single_word` tokens only between non-word characters;
// `lstrip` / `rstrip` tokens take the whitespace on their left / right with
// them. Tokens with `normalized` true are looked for in the normalized text,
// the others in the raw text.
#ifndef MOESERVE_SCHEDULER_TOKENIZER_ADDED_TOKENS_H_
#define MOESERVE_SCHEDULER_TOKENIZER_ADDED_TOKENS_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"

namespace moeserve {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

// Finds a fixed set of added tokens in text. Immutable after construction;
// safe to use from many threads.
class AddedTokenMatcher {
 public:
  // Looks for `tokens` (copied); empty contents are ignored.
  explicit AddedTokenMatcher(const std::vector<AddedToken>& tokens);

  // Splits well-formed UTF-8 `text` into plain-text runs (non-empty, in
  // order, `on_text`) and the added tokens between them (`on_token`, with the
  // token's id). With `skip_special`, matches of special tokens are left in
  // the text (Hugging Face's split_special_tokens / encode_special_tokens).
  void Split(std::string_view text, bool skip_special,
             absl::FunctionRef<void(std::string_view)> on_text,
             absl::FunctionRef<void(int32_t)> on_token) const;

 private:
  // Length of the longest token at text[pos...], or 0; its index in `*token`.
  size_t LongestAt(std::string_view text, size_t pos, int32_t* token) const;

  std::vector<AddedToken> tokens_;
  // A byte trie: node 0 is the root; child of (node, byte) at key node<<8|byte.
  absl::flat_hash_map<uint32_t, int32_t> children_;
  std::vector<int32_t> terminal_;  // per node: index in tokens_, or -1
  std::array<bool, 256> first_{};  // bytes that start some token
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_TOKENIZER_ADDED_TOKENS_H_
