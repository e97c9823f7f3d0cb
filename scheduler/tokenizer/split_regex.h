// The regular expressions of pre-tokenizers (`Split` patterns), matched as
// Hugging Face tokenizers match them, on RE2.
//
// Hugging Face compiles these patterns with Oniguruma (Ruby syntax, UTF-8).
// They are translated to RE2 so that they mean the same thing there:
//   - \s, \d, \w and \h get Oniguruma's Unicode meanings (RE2's are ASCII):
//     \s is [\t\n\v\f\r\x{85}\p{Z}], \d is \p{Nd}, \w is [\p{L}\p{M}\p{N}\p{Pc}].
//   - Capturing and named groups become non-capturing.
//   - Ruby's (?m) (dot matches newline) becomes RE2's (?s); ^ and $ match at
//     line boundaries, as in Ruby.
//   - The GPT-2 tail `\s+(?!\S)|\s+` is matched exactly without lookahead (see
//     split_regex.cc for why the translation is exact).
// Everything whose meaning would differ or that RE2 lacks is an error naming
// the construct: other lookarounds, atomic groups, possessive quantifiers,
// backreferences, \b, nested classes and class intersections, \S \W \H
// inside a class, byte escapes \x80..\xff, and flags other than i and m.
#ifndef MOESERVE_SCHEDULER_TOKENIZER_SPLIT_REGEX_H_
#define MOESERVE_SCHEDULER_TOKENIZER_SPLIT_REGEX_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"

namespace re2 {
class RE2;
}

namespace moeserve {

struct TranslatedPattern {
  std::string re2;  // RE2 syntax
  // The pattern's top-level alternatives end in `\s+(?!\S)|\s+`, translated
  // to the capturing group 1 `(\s+)`, whose matches need trimming.
  bool whitespace_lookahead_tail = false;
};

// Translates an Oniguruma (Ruby syntax) pattern to RE2 syntax.
absl::StatusOr<TranslatedPattern> TranslateOnigurumaPattern(std::string_view pattern);

// Oniguruma's Unicode \s: U+0009..U+000D, U+0085 and the separators (Z).
bool IsOnigurumaSpace(char32_t cp);

// A compiled pattern. Immutable after Create and safe to use from many
// threads at once (RE2 is).
class SplitRegex {
 public:
  static absl::StatusOr<std::unique_ptr<SplitRegex>> Create(std::string_view pattern);
  ~SplitRegex();
  SplitRegex(const SplitRegex&) = delete;
  SplitRegex& operator=(const SplitRegex&) = delete;

  // Calls `match(begin, end)` (byte offsets into `text`) for each match of a
  // left-to-right scan, as Oniguruma's search loop finds them: leftmost
  // match, then the next one from its end; empty matches are skipped.
  // `text` must be well-formed UTF-8.
  void ForEachMatch(std::string_view text, absl::FunctionRef<void(size_t, size_t)> match) const;

  const std::string& re2_pattern() const { return translated_.re2; }

 private:
  SplitRegex() = default;

  TranslatedPattern translated_;
  std::unique_ptr<re2::RE2> re_;
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_TOKENIZER_SPLIT_REGEX_H_
