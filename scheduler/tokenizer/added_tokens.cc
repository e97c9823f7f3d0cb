#include "scheduler/tokenizer/added_tokens.h"

#include <unicode/uchar.h>

#include "scheduler/tokenizer/utf8.h"

namespace moeserve {
namespace {

// Rust's char::is_alphanumeric: Alphabetic, or a number (Nd, Nl, No).
bool IsAlphanumeric(char32_t cp) {
  const auto c = static_cast<UChar32>(cp);
  if (u_hasBinaryProperty(c, UCHAR_ALPHABETIC)) return true;
  const int8_t type = u_charType(c);
  return type == U_DECIMAL_DIGIT_NUMBER || type == U_LETTER_NUMBER || type == U_OTHER_NUMBER;
}

// Rust's char::is_whitespace: the White_Space property.
bool IsWhitespace(char32_t cp) { return u_isUWhiteSpace(static_cast<UChar32>(cp)); }

// The code point that ends at `end` (> 0) and where it starts.
char32_t LastChar(std::string_view text, size_t end, size_t* start) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) --i;
  *start = i;
  size_t length;
  return DecodeUtf8(text.substr(i), &length);
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens) {
  terminal_.push_back(-1);
  for (const AddedToken& token : tokens) {
    if (token.content.empty()) continue;
    const auto index = static_cast<int32_t>(tokens_.size());
    tokens_.push_back(token);
    int32_t node = 0;
    for (char c : token.content) {
      const uint32_t key = (static_cast<uint32_t>(node) << 8) | static_cast<uint8_t>(c);
      const auto [it, inserted] =
          children_.try_emplace(key, static_cast<int32_t>(terminal_.size()));
      if (inserted) terminal_.push_back(-1);
      node = it->second;
    }
    // Two tokens with one content: the later wins, as in a map by content.
    terminal_[node] = index;
    first_[static_cast<uint8_t>(token.content[0])] = true;
  }
}

size_t AddedTokenMatcher::LongestAt(std::string_view text, size_t pos, int32_t* token) const {
  size_t longest = 0;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const uint32_t key = (static_cast<uint32_t>(node) << 8) | static_cast<uint8_t>(text[i]);
    const auto it = children_.find(key);
    if (it == children_.end()) break;
    node = it->second;
    if (terminal_[node] >= 0) {
      longest = i + 1 - pos;
      *token = terminal_[node];
    }
  }
  return longest;
}

void AddedTokenMatcher::Split(std::string_view text, bool skip_special,
                              absl::FunctionRef<void(std::string_view)> on_text,
                              absl::FunctionRef<void(int32_t)> on_token) const {
  size_t emitted = 0;  // text before this is handed out
  size_t pos = 0;      // the search goes on from here
  while (pos < text.size() && !tokens_.empty()) {
    if (!first_[static_cast<uint8_t>(text[pos])]) {
      ++pos;
      continue;
    }
    int32_t index = -1;
    const size_t length = LongestAt(text, pos, &index);
    if (length == 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[index];
    size_t start = pos;
    size_t stop = pos + length;
    pos = stop;  // matches never overlap, whatever happens to this one
    if (skip_special && token.special) continue;
    if (token.single_word) {
      size_t unused;
      const bool word_before = start > 0 && IsAlphanumeric(LastChar(text, start, &unused));
      size_t first_length;
      const bool word_after =
          stop < text.size() && IsAlphanumeric(DecodeUtf8(text.substr(stop), &first_length));
      if (word_before || word_after) continue;
    }
    if (token.lstrip) {
      while (start > emitted) {
        size_t char_start;
        if (!IsWhitespace(LastChar(text, start, &char_start))) break;
        start = char_start;
      }
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        size_t char_length;
        if (!IsWhitespace(DecodeUtf8(text.substr(stop), &char_length))) break;
        stop += char_length;
      }
      pos = stop;
    }
    if (emitted < start) on_text(text.substr(emitted, start - emitted));
    on_token(token.id);
    emitted = stop;
  }
  if (emitted < text.size()) on_text(text.substr(emitted));
}

}  // namespace moeserve
