#include "scheduler/tokenizer/split_regex.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "re2/re2.h"
#include "scheduler/tokenizer/string_view_compat.h"
#include "scheduler/tokenizer/utf8.h"

namespace moeserve {
namespace {

// Oniguruma's Unicode classes, spelled for RE2 (inside a class: no brackets).
constexpr std::string_view kSpaceItems = R"(\t\n\x{0B}\f\r\x{85}\p{Z})";
constexpr std::string_view kWordItems = R"(\p{L}\p{M}\p{N}\p{Pc})";
constexpr std::string_view kHexItems = "0-9a-fA-F";

// `\s+(?!\S)` matches a run of whitespace that is not followed by a
// non-space: at the end of the text the whole run, before a non-space the run
// less its last character (the backtracking engine gives back one character,
// after which the lookahead sees whitespace), and nothing for a single space
// before a non-space, where `|\s+` then takes that one space. So at any
// position where no earlier alternative matches, `\s+(?!\S)|\s+` matches
// exactly what `(\s+)` (greedy: the whole run) matches, less its last
// character when the run has at least two characters and is followed by a
// non-space. Matches elsewhere are the same under both patterns, since the
// alternatives before the tail are identical and the set of positions where
// the tail can match is the same (both match wherever \s does). SplitRegex
// applies the trimming and restarts the scan at the trimmed end, as
// Oniguruma's scan does after the shorter match.
constexpr std::string_view kLookaheadTail = R"(\s+(?!\S)|\s+)";

absl::Status Unsupported(absl::string_view what, size_t offset, std::string_view pattern) {
  return absl::InvalidArgumentError(absl::StrCat("regex ", what, " at offset ", offset,
                                                 " is not supported (pattern \"", AsAbsl(pattern),
                                                 "\")"));
}

class Translator {
 public:
  explicit Translator(std::string_view pattern) : p_(pattern) {}

  absl::StatusOr<TranslatedPattern> Run() {
    while (i_ < p_.size()) {
      absl::Status s = in_class_ ? ClassItem() : Atom();
      if (!s.ok()) return s;
    }
    if (in_class_) return Unsupported("unterminated character class", p_.size(), p_);
    return std::move(out_);
  }

 private:
  // One element outside a character class.
  absl::Status Atom() {
    const char c = p_[i_];
    const bool alternative_start = alternative_start_;
    alternative_start_ = false;
    switch (c) {
      case '\\':
        if (depth_ == 0 && alternative_start && p_.substr(i_).starts_with(kLookaheadTail)) {
          const size_t end = i_ + kLookaheadTail.size();
          if (end == p_.size() || p_[end] == '|') {
            absl::StrAppend(&out_.re2, "([", AsAbsl(kSpaceItems), "]+)");
            out_.whitespace_lookahead_tail = true;
            i_ = end;
            return absl::OkStatus();
          }
        }
        return Escape();
      case '[':
        in_class_ = true;
        class_start_ = i_;
        out_.re2.push_back('[');
        ++i_;
        if (i_ < p_.size() && p_[i_] == '^') {
          out_.re2.push_back('^');
          ++i_;
        }
        return absl::OkStatus();
      case '(':
        return Group();
      case ')':
        if (depth_ > 0) --depth_;
        out_.re2.push_back(')');
        ++i_;
        return absl::OkStatus();
      case '|':
        alternative_start_ = true;
        out_.re2.push_back('|');
        ++i_;
        return absl::OkStatus();
      case '^':
        out_.re2.append("(?m:^)");
        ++i_;
        return absl::OkStatus();
      case '$':
        out_.re2.append("(?m:$)");
        ++i_;
        return absl::OkStatus();
      case '+':
      case '*':
      case '?':
        out_.re2.push_back(c);
        ++i_;
        if (i_ < p_.size() && p_[i_] == '+') {
          return Unsupported("possessive quantifier", i_ - 1, p_);
        }
        return absl::OkStatus();
      default:
        out_.re2.push_back(c);
        ++i_;
        return absl::OkStatus();
    }
  }

  absl::Status Group() {
    const std::string_view rest = p_.substr(i_);
    ++depth_;
    alternative_start_ = true;
    if (!rest.starts_with("(?")) {  // capturing: our group 1 must be the only one
      out_.re2.append("(?:");
      ++i_;
      return absl::OkStatus();
    }
    if (rest.starts_with("(?:")) {
      out_.re2.append("(?:");
      i_ += 3;
      return absl::OkStatus();
    }
    if (rest.starts_with("(?=") || rest.starts_with("(?!") || rest.starts_with("(?<=") ||
        rest.starts_with("(?<!")) {
      return Unsupported("lookaround (only the tail \\s+(?!\\S)|\\s+ is)", i_, p_);
    }
    if (rest.starts_with("(?>")) return Unsupported("atomic group", i_, p_);
    if (rest.starts_with("(?<") || rest.starts_with("(?P<") || rest.starts_with("(?'")) {
      const size_t close = p_.find_first_of(">'", i_ + 3);
      if (close == std::string_view::npos) return Unsupported("unterminated group name", i_, p_);
      out_.re2.append("(?:");
      i_ = close + 1;
      return absl::OkStatus();
    }
    // Flags: (?i-m) or (?i-m:...).
    std::string flags = "(?";
    size_t j = i_ + 2;
    for (; j < p_.size() && p_[j] != ')' && p_[j] != ':'; ++j) {
      if (p_[j] == 'i' || p_[j] == '-') {
        flags.push_back(p_[j]);
      } else if (p_[j] == 'm') {
        flags.push_back('s');  // Ruby's m is dot-matches-newline
      } else {
        return Unsupported(absl::StrCat("group flag '", std::string(1, p_[j]), "'"), j, p_);
      }
    }
    if (j == p_.size()) return Unsupported("unterminated group", i_, p_);
    flags.push_back(p_[j]);
    if (p_[j] == ')') --depth_;  // (?i) opens no group
    out_.re2.append(flags);
    i_ = j + 1;
    return absl::OkStatus();
  }

  // An escape outside a class.
  absl::Status Escape() {
    if (i_ + 1 >= p_.size()) return Unsupported("trailing backslash", i_, p_);
    const char e = p_[i_ + 1];
    switch (e) {
      case 's':
        absl::StrAppend(&out_.re2, "[", AsAbsl(kSpaceItems), "]");
        break;
      case 'S':
        absl::StrAppend(&out_.re2, "[^", AsAbsl(kSpaceItems), "]");
        break;
      case 'd':
        out_.re2.append(R"(\p{Nd})");
        break;
      case 'D':
        out_.re2.append(R"(\P{Nd})");
        break;
      case 'w':
        absl::StrAppend(&out_.re2, "[", AsAbsl(kWordItems), "]");
        break;
      case 'W':
        absl::StrAppend(&out_.re2, "[^", AsAbsl(kWordItems), "]");
        break;
      case 'h':
        absl::StrAppend(&out_.re2, "[", AsAbsl(kHexItems), "]");
        break;
      case 'H':
        absl::StrAppend(&out_.re2, "[^", AsAbsl(kHexItems), "]");
        break;
      case 'b':
      case 'B':
        return Unsupported("word boundary \\b (Unicode in Oniguruma, ASCII in RE2)", i_, p_);
      case 'Z':
      case 'G':
      case 'R':
      case 'X':
      case 'K':
      case 'k':
      case 'g':
        return Unsupported(absl::StrCat("escape \\", std::string(1, e)), i_, p_);
      default:
        if (e >= '1' && e <= '9') return Unsupported("backreference", i_, p_);
        return CopyEscape();
    }
    i_ += 2;
    return absl::OkStatus();
  }

  // Copies an escape that means the same in both syntaxes (\p{..}, \x{..},
  // \n, \., ...), rejecting byte escapes.
  absl::Status CopyEscape() {
    const char e = p_[i_ + 1];
    if (e == 'x' && i_ + 2 < p_.size() && p_[i_ + 2] != '{') {
      // \xHH is a byte in Oniguruma, a code point in RE2: equal below 0x80.
      if (i_ + 3 >= p_.size() || !(p_[i_ + 2] >= '0' && p_[i_ + 2] <= '7')) {
        return Unsupported("byte escape \\xHH above \\x7f", i_, p_);
      }
    }
    if (e >= '0' && e <= '7') return Unsupported("octal escape", i_, p_);
    out_.re2.append(p_.substr(i_, 2));
    i_ += 2;
    return absl::OkStatus();
  }

  // One element inside a character class.
  absl::Status ClassItem() {
    const char c = p_[i_];
    if (c == ']' && i_ > class_start_ + 1 &&
        !(i_ == class_start_ + 2 && p_[class_start_ + 1] == '^')) {
      in_class_ = false;
      out_.re2.push_back(']');
      ++i_;
      return absl::OkStatus();
    }
    if (c == '[') return Unsupported("nested character class", i_, p_);
    if (c == '&' && i_ + 1 < p_.size() && p_[i_ + 1] == '&') {
      return Unsupported("character class intersection &&", i_, p_);
    }
    if (c != '\\') {
      out_.re2.push_back(c);
      ++i_;
      return absl::OkStatus();
    }
    if (i_ + 1 >= p_.size()) return Unsupported("trailing backslash", i_, p_);
    switch (p_[i_ + 1]) {
      case 's':
        out_.re2.append(kSpaceItems);
        break;
      case 'd':
        out_.re2.append(R"(\p{Nd})");
        break;
      case 'D':
        out_.re2.append(R"(\P{Nd})");
        break;
      case 'w':
        out_.re2.append(kWordItems);
        break;
      case 'h':
        out_.re2.append(kHexItems);
        break;
      case 'S':
      case 'W':
      case 'H':
        return Unsupported(absl::StrCat("negated class \\", std::string(1, p_[i_ + 1]),
                                        " inside a character class"),
                           i_, p_);
      default:
        return CopyEscape();
    }
    i_ += 2;
    return absl::OkStatus();
  }

  std::string_view p_;
  size_t i_ = 0;
  int depth_ = 0;
  bool in_class_ = false;
  size_t class_start_ = 0;
  bool alternative_start_ = true;  // the next atom begins an alternative
  TranslatedPattern out_;
};

}  // namespace

absl::StatusOr<TranslatedPattern> TranslateOnigurumaPattern(std::string_view pattern) {
  return Translator(pattern).Run();
}

bool IsOnigurumaSpace(char32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

namespace {

// Whether text[begin, end) is all Oniguruma whitespace, as a match of the
// lookahead tail is.
bool AllSpace(std::string_view text, size_t begin, size_t end) {
  while (begin < end) {
    size_t length;
    if (!IsOnigurumaSpace(DecodeUtf8(text.substr(begin), &length))) return false;
    begin += length;
  }
  return true;
}

}  // namespace

SplitRegex::~SplitRegex() = default;

absl::StatusOr<std::unique_ptr<SplitRegex>> SplitRegex::Create(std::string_view pattern) {
  absl::StatusOr<TranslatedPattern> translated = TranslateOnigurumaPattern(pattern);
  if (!translated.ok()) return translated.status();
  std::unique_ptr<SplitRegex> regex(new SplitRegex);
  regex->translated_ = *std::move(translated);
  RE2::Options options;
  options.set_log_errors(false);
  // Large Unicode classes need DFA states; without room RE2 falls back to
  // its much slower NFA. Memory is only taken as states are built.
  options.set_max_mem(int64_t{256} << 20);
  regex->re_ = std::make_unique<RE2>(regex->translated_.re2, options);
  if (!regex->re_->ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("regex \"", AsAbsl(pattern), "\" does not compile (as RE2 \"",
                     regex->translated_.re2, "\"): ", regex->re_->error()));
  }
  return regex;
}

void SplitRegex::ForEachMatch(std::string_view text,
                              absl::FunctionRef<void(size_t, size_t)> match) const {
  const re2::StringPiece input(text.data(), text.size());
  size_t pos = 0;
  // Whether the last match ended at `pos`. Pre-tokenizer patterns mostly
  // match back to back; then a match anchored at `pos`, when there is one,
  // is the leftmost match, and RE2 finds it with one forward DFA pass instead
  // of the forward and reverse passes of an unanchored search.
  bool adjacent = true;
  re2::StringPiece m;
  while (pos < text.size()) {
    if (!(adjacent && re_->Match(input, pos, text.size(), RE2::ANCHOR_START, &m, 1)) &&
        !re_->Match(input, pos, text.size(), RE2::UNANCHORED, &m, /*nsubmatch=*/1)) {
      break;
    }
    const auto begin = static_cast<size_t>(m.data() - text.data());
    size_t end = begin + m.size();
    if (end == begin) {  // empty match: step over one character
      size_t length;
      DecodeUtf8(text.substr(begin), &length);
      pos = begin + length;
      adjacent = false;
      continue;
    }
    if (translated_.whitespace_lookahead_tail && end < text.size() && AllSpace(text, begin, end)) {
      size_t last = end - 1;  // first byte of the match's last character
      while ((static_cast<unsigned char>(text[last]) & 0xC0) == 0x80) --last;
      re2::StringPiece groups[2];
      // Anchored at both ends, the highest-priority match of [begin, end) is
      // the one found above, so group 1 tells whether the tail made it.
      if (last > begin &&
          re_->Match(input, begin, end, RE2::ANCHOR_BOTH, groups, /*nsubmatch=*/2) &&
          groups[1].data() != nullptr) {
        end = last;  // followed by a non-space: the tail gives one back
      }
    }
    match(begin, end);
    adjacent = begin == pos;
    pos = end;
  }
}

}  // namespace moeserve
