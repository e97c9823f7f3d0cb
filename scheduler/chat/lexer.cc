#include "scheduler/chat/lexer.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "scheduler/chat/py_string.h"
#include "scheduler/chat/str_cat.h"

namespace moeserve::jinja {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsNameStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsNameChar(char c) { return IsNameStart(c) || IsDigit(c); }

// Jinja normalizes \r\n and \r to \n and drops one trailing newline
// (keep_trailing_newline=False).
std::string NormalizeNewlines(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) : src_(NormalizeNewlines(source)) {
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') newlines_.push_back(i);
    }
  }

  absl::StatusOr<std::vector<Token>> Run();

 private:
  int LineAt(size_t pos) const {
    return 1 + static_cast<int>(std::lower_bound(newlines_.begin(), newlines_.end(), pos) -
                                newlines_.begin());
  }
  absl::Status Error(size_t pos, std::string_view message) const {
    return absl::InvalidArgumentError(Cat("line ", LineAt(pos), ": ", message));
  }
  bool At(size_t pos, std::string_view s) const { return src_.compare(pos, s.size(), s) == 0; }
  // Skips Python \s* (Unicode whitespace) from pos.
  size_t SkipWhitespace(size_t pos) const;
  std::string RStripWhitespace(std::string text) const;
  // lstrip_blocks: drops the spaces before a tag that starts its line.
  std::string LStripBlock(std::string text) const;
  // `{%(-|+|)\s*<word>\s*` at pos ending in `-%}\s*`, `+%}` or `%}` (with the
  // trimmed newline when trim_end): the end of the match, or npos.
  size_t MatchWordTag(size_t pos, std::string_view word, bool allow_plus_end, bool trim_end) const;
  void EmitData(std::string text, size_t pos);
  absl::Status LexTag(bool block, size_t& pos);
  absl::Status LexTagToken(size_t& pos, std::vector<char>& brackets);
  absl::Status LexString(size_t& pos);
  bool LexNumber(size_t& pos, absl::Status& status);
  absl::Status LexRaw(size_t& pos);
  absl::Status SkipComment(size_t& pos, size_t tag_pos);

  std::string src_;
  std::vector<size_t> newlines_;  // offsets of '\n' in src_, for line numbers
  std::vector<Token> tokens_;
  bool line_starting_ = true;  // the last match ended a line (Jinja's lstrip rule)
};

size_t Lexer::SkipWhitespace(size_t pos) const {
  while (pos < src_.size()) {
    size_t next = pos;
    if (!IsPyWhitespace(DecodeCodePointAt(src_, next))) break;
    pos = next;
  }
  return pos;
}

std::string Lexer::RStripWhitespace(std::string text) const {
  return PyStrip(text, std::nullopt, /*left=*/false, /*right=*/true);
}

std::string Lexer::LStripBlock(std::string text) const {
  const size_t nl = text.rfind('\n');
  const size_t line_start = nl == std::string::npos ? 0 : nl + 1;
  if (line_start == 0 && !line_starting_) return text;
  const std::string_view tail = std::string_view(text).substr(line_start);
  if (tail.empty()) return text;
  for (char32_t cp : DecodeUtf8(tail)) {
    if (!IsPyWhitespace(cp)) return text;
  }
  text.resize(line_start);
  return text;
}

size_t Lexer::MatchWordTag(size_t pos, std::string_view word, bool allow_plus_end,
                           bool trim_end) const {
  if (!At(pos, "{%")) return std::string::npos;
  pos += 2;
  if (pos < src_.size() && (src_[pos] == '-' || src_[pos] == '+')) ++pos;
  pos = SkipWhitespace(pos);
  if (!At(pos, word)) return std::string::npos;
  pos = SkipWhitespace(pos + word.size());
  if (At(pos, "-%}")) return SkipWhitespace(pos + 3);
  if (allow_plus_end && At(pos, "+%}")) return pos + 3;
  if (At(pos, "%}")) {
    pos += 2;
    if (trim_end && pos < src_.size() && src_[pos] == '\n') ++pos;
    return pos;
  }
  return std::string::npos;
}

void Lexer::EmitData(std::string text, size_t pos) {
  if (text.empty()) return;
  tokens_.push_back(Token{TokenKind::kData, std::move(text), LineAt(pos)});
}

absl::StatusOr<std::vector<Token>> Lexer::Run() {
  size_t pos = 0;
  const size_t n = src_.size();
  while (pos < n) {
    size_t tag = pos;
    while (tag + 1 < n && !(src_[tag] == '{' && (src_[tag + 1] == '{' || src_[tag + 1] == '%' ||
                                                 src_[tag + 1] == '#'))) {
      ++tag;
    }
    if (tag + 1 >= n) {
      EmitData(src_.substr(pos), pos);
      break;
    }
    const char type = src_[tag + 1];
    size_t body = tag + 2;
    char sign = 0;
    if (body < n && (src_[body] == '-' || src_[body] == '+')) sign = src_[body++];
    const size_t raw_end =
        type == '%' ? MatchWordTag(tag, "raw", /*allow_plus_end=*/false, /*trim_end=*/false)
                    : std::string::npos;
    std::string text = src_.substr(pos, tag - pos);
    if (sign == '-') {
      text = RStripWhitespace(std::move(text));
    } else if (sign != '+' && type != '{') {
      text = LStripBlock(std::move(text));
    }
    EmitData(std::move(text), pos);
    if (raw_end != std::string::npos) {
      pos = raw_end;
      line_starting_ = src_[pos - 1] == '\n';
      if (absl::Status s = LexRaw(pos); !s.ok()) return s;
    } else if (type == '#') {
      pos = body;
      if (absl::Status s = SkipComment(pos, tag); !s.ok()) return s;
    } else {
      const bool block = type == '%';
      tokens_.push_back(Token{block ? TokenKind::kBlockBegin : TokenKind::kVariableBegin,
                              block ? "{%" : "{{", LineAt(tag)});
      pos = body;
      if (absl::Status s = LexTag(block, pos); !s.ok()) return s;
    }
  }
  tokens_.push_back(Token{TokenKind::kEof, "", LineAt(n)});
  return std::move(tokens_);
}

absl::Status Lexer::SkipComment(size_t& pos, size_t tag_pos) {
  for (size_t k = pos; k + 1 < src_.size(); ++k) {
    if (At(k, "+#}")) {
      pos = k + 3;
    } else if (At(k, "-#}")) {
      pos = SkipWhitespace(k + 3);
    } else if (At(k, "#}")) {
      pos = k + 2;
      if (pos < src_.size() && src_[pos] == '\n') ++pos;
    } else {
      continue;
    }
    line_starting_ = src_[pos - 1] == '\n';
    return absl::OkStatus();
  }
  return Error(tag_pos, "missing end of comment tag");
}

absl::Status Lexer::LexRaw(size_t& pos) {
  for (size_t k = pos; k < src_.size(); ++k) {
    const size_t end = MatchWordTag(k, "endraw", /*allow_plus_end=*/true, /*trim_end=*/true);
    if (end == std::string::npos) continue;
    const char sign = src_[k + 2];
    std::string text = src_.substr(pos, k - pos);
    if (sign == '-') {
      text = RStripWhitespace(std::move(text));
    } else if (sign != '+') {
      text = LStripBlock(std::move(text));
    }
    EmitData(std::move(text), pos);
    pos = end;
    line_starting_ = src_[pos - 1] == '\n';
    return absl::OkStatus();
  }
  return Error(pos, "missing end of raw directive ({% endraw %})");
}

absl::Status Lexer::LexTag(bool block, size_t& pos) {
  const size_t start = pos;
  std::vector<char> brackets;  // expected closers; end tags count only outside brackets
  while (true) {
    if (pos >= src_.size()) {
      return Error(start,
                   Cat("unexpected end of template: ", block ? "{%" : "{{", " is not closed"));
    }
    if (brackets.empty()) {
      size_t end = std::string::npos;
      if (block) {
        if (At(pos, "+%}")) {
          end = pos + 3;
        } else if (At(pos, "-%}")) {
          end = SkipWhitespace(pos + 3);
        } else if (At(pos, "%}")) {
          end = pos + 2;
          if (end < src_.size() && src_[end] == '\n') ++end;  // trim_blocks
        }
      } else if (At(pos, "-}}")) {
        end = SkipWhitespace(pos + 3);
      } else if (At(pos, "}}")) {
        end = pos + 2;
      }
      if (end != std::string::npos) {
        tokens_.push_back(Token{block ? TokenKind::kBlockEnd : TokenKind::kVariableEnd,
                                block ? "%}" : "}}", LineAt(pos)});
        pos = end;
        line_starting_ = src_[pos - 1] == '\n';
        return absl::OkStatus();
      }
    }
    if (absl::Status s = LexTagToken(pos, brackets); !s.ok()) return s;
  }
}

absl::Status Lexer::LexTagToken(size_t& pos, std::vector<char>& brackets) {
  const size_t skipped = SkipWhitespace(pos);
  if (skipped != pos) {
    pos = skipped;
    return absl::OkStatus();
  }
  const char c = src_[pos];
  absl::Status status;
  if (LexNumber(pos, status)) return status;
  if (IsNameStart(c)) {
    size_t end = pos;
    while (end < src_.size() && IsNameChar(src_[end])) ++end;
    tokens_.push_back(Token{TokenKind::kName, src_.substr(pos, end - pos), LineAt(pos)});
    pos = end;
    return absl::OkStatus();
  }
  if (c == '\'' || c == '"') return LexString(pos);
  static constexpr std::string_view kTwoCharOps[] = {"//", "**", "==", "!=", ">=", "<="};
  for (std::string_view op : kTwoCharOps) {
    if (At(pos, op)) {
      tokens_.push_back(Token{TokenKind::kOperator, std::string(op), LineAt(pos)});
      pos += 2;
      return absl::OkStatus();
    }
  }
  if (std::string_view("+-/*%~[](){}><=.:|,;").find(c) == std::string_view::npos) {
    size_t next = pos;
    std::string shown;
    AppendUtf8(DecodeCodePointAt(src_, next), shown);
    return Error(pos, Cat("unexpected character '", shown, "' in tag"));
  }
  if (c == '(' || c == '[' || c == '{') {
    brackets.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
  } else if (c == ')' || c == ']' || c == '}') {
    if (brackets.empty()) return Error(pos, Cat("unexpected '", std::string(1, c), "'"));
    if (brackets.back() != c) {
      return Error(pos, Cat("unexpected '", std::string(1, c), "', expected '",
                            std::string(1, brackets.back()), "'"));
    }
    brackets.pop_back();
  }
  tokens_.push_back(Token{TokenKind::kOperator, std::string(1, c), LineAt(pos)});
  ++pos;
  return absl::OkStatus();
}

// Matches Python's (\d+_)*\d+ at pos: the end, or npos.
size_t MatchDigits(std::string_view s, size_t pos) {
  if (pos >= s.size() || !IsDigit(s[pos])) return std::string_view::npos;
  while (pos < s.size() && IsDigit(s[pos])) ++pos;
  while (pos + 1 < s.size() && s[pos] == '_' && IsDigit(s[pos + 1])) {
    ++pos;
    while (pos < s.size() && IsDigit(s[pos])) ++pos;
  }
  return pos;
}

// Matches e[+-]?digits at pos (case-insensitive): the end, or npos.
size_t MatchExponent(std::string_view s, size_t pos) {
  if (pos >= s.size() || (s[pos] != 'e' && s[pos] != 'E')) return std::string_view::npos;
  ++pos;
  if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) ++pos;
  return MatchDigits(s, pos);
}

std::string WithoutUnderscores(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c != '_') out.push_back(c);
  }
  return out;
}

bool IsDigitOfBase(char c, int base) {
  const char l = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (base == 2) return l == '0' || l == '1';
  if (base == 8) return l >= '0' && l <= '7';
  return IsDigit(l) || (l >= 'a' && l <= 'f');
}

bool Lexer::LexNumber(size_t& pos, absl::Status& status) {
  const std::string_view s = src_;
  // Float first, as Jinja does: digits then a fraction and/or an exponent,
  // never right after a '.' (so that x.0.1 is not x, .0, .1).
  if (pos == 0 || s[pos - 1] != '.') {
    const size_t int_end = MatchDigits(s, pos);
    if (int_end != std::string_view::npos) {
      size_t end = std::string_view::npos;
      const size_t frac_end = int_end < s.size() && s[int_end] == '.' ? MatchDigits(s, int_end + 1)
                                                                      : std::string_view::npos;
      if (frac_end != std::string_view::npos) {
        const size_t exp_end = MatchExponent(s, frac_end);
        end = exp_end != std::string_view::npos ? exp_end : frac_end;
      } else {
        end = MatchExponent(s, int_end);
      }
      if (end != std::string_view::npos) {
        const std::string text = WithoutUnderscores(s.substr(pos, end - pos));
        tokens_.push_back(Token{TokenKind::kFloat, text, LineAt(pos)});
        tokens_.back().float_value = std::strtod(text.c_str(), nullptr);
        pos = end;
        return true;
      }
    }
  }
  if (!IsDigit(s[pos])) return false;
  size_t end = pos;
  int base = 10;
  size_t digits_begin = pos;
  const char prefix = pos + 1 < s.size() ? static_cast<char>(std::tolower(s[pos + 1])) : 0;
  if (s[pos] == '0' && (prefix == 'b' || prefix == 'o' || prefix == 'x')) {
    base = prefix == 'b' ? 2 : prefix == 'o' ? 8 : 16;
    size_t p = pos + 2;
    while (p < s.size()) {
      const size_t digit = p < s.size() && s[p] == '_' ? p + 1 : p;
      if (digit >= s.size() || !IsDigitOfBase(s[digit], base)) break;
      p = digit + 1;
    }
    if (p > pos + 2) {
      end = p;
      digits_begin = pos + 2;
    } else {
      base = 10;
    }
  }
  if (base == 10) {
    if (s[pos] == '0') {
      // 0(_?0)*
      end = pos + 1;
      while (end < s.size()) {
        const size_t digit = s[end] == '_' ? end + 1 : end;
        if (digit >= s.size() || s[digit] != '0') break;
        end = digit + 1;
      }
    } else {
      end = MatchDigits(s, pos);
    }
  }
  const std::string digits = WithoutUnderscores(s.substr(digits_begin, end - digits_begin));
  errno = 0;
  const long long value = std::strtoll(digits.c_str(), nullptr, base);
  if (errno == ERANGE) {
    status =
        Error(pos, Cat("integer literal ", s.substr(pos, end - pos), " does not fit in 64 bits"));
    return true;
  }
  tokens_.push_back(Token{TokenKind::kInteger, std::string(s.substr(pos, end - pos)), LineAt(pos)});
  tokens_.back().int_value = value;
  pos = end;
  return true;
}

absl::Status Lexer::LexString(size_t& pos) {
  const char quote = src_[pos];
  const size_t start = pos;
  std::string value;
  size_t i = pos + 1;
  auto hex = [&](int count, char32_t& cp) {
    cp = 0;
    for (int k = 0; k < count; ++k) {
      if (i >= src_.size() || !IsDigitOfBase(src_[i], 16) || src_[i] == quote) return false;
      const char h = static_cast<char>(std::tolower(static_cast<unsigned char>(src_[i++])));
      cp = cp * 16 + static_cast<char32_t>(IsDigit(h) ? h - '0' : h - 'a' + 10);
    }
    return true;
  };
  while (true) {
    if (i >= src_.size()) return Error(start, "unterminated string literal");
    const char c = src_[i];
    if (c == quote) break;
    if (c != '\\') {
      value.push_back(c);
      ++i;
      continue;
    }
    if (i + 1 >= src_.size()) return Error(start, "unterminated string literal");
    const char e = src_[i + 1];
    i += 2;
    char32_t cp = 0;
    switch (e) {
      case '\n':
        continue;  // line continuation
      case '\\':
      case '\'':
      case '"':
        value.push_back(e);
        continue;
      case 'a':
        value.push_back('\a');
        continue;
      case 'b':
        value.push_back('\b');
        continue;
      case 'f':
        value.push_back('\f');
        continue;
      case 'n':
        value.push_back('\n');
        continue;
      case 'r':
        value.push_back('\r');
        continue;
      case 't':
        value.push_back('\t');
        continue;
      case 'v':
        value.push_back('\v');
        continue;
      case 'x':
      case 'u':
      case 'U':
        if (!hex(e == 'x' ? 2 : e == 'u' ? 4 : 8, cp)) {
          return Error(start, Cat("truncated \\", std::string(1, e), " escape in string"));
        }
        break;
      case 'N':
        return Error(start, "\\N{...} escapes are not supported in string literals");
      default:
        if (e >= '0' && e <= '7') {
          cp = static_cast<char32_t>(e - '0');
          for (int k = 0; k < 2 && i < src_.size() && src_[i] >= '0' && src_[i] <= '7'; ++k) {
            cp = cp * 8 + static_cast<char32_t>(src_[i++] - '0');
          }
          break;
        }
        if (static_cast<unsigned char>(e) >= 0x80) {
          // Python first escapes non-ASCII text (backslashreplace), so a
          // backslash before it yields that escape's text: '\\é' is "\\xe9".
          size_t at = i - 1;
          const char32_t raw = DecodeCodePointAt(src_, at);
          i = at;
          char buf[16];
          std::snprintf(buf, sizeof(buf),
                        raw < 0x100     ? "\\x%02x"
                        : raw < 0x10000 ? "\\u%04x"
                                        : "\\U%08x",
                        static_cast<unsigned>(raw));
          value += buf;
          continue;
        }
        value.push_back('\\');  // unknown escapes stay as written
        value.push_back(e);
        continue;
    }
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return Error(start, "string literal escape is not a valid Unicode scalar value");
    }
    AppendUtf8(cp, value);
  }
  tokens_.push_back(Token{TokenKind::kString, std::move(value), LineAt(start)});
  pos = i + 1;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source) {
  if (!IsValidUtf8(source)) return absl::InvalidArgumentError("template is not valid UTF-8");
  return Lexer(source).Run();
}

}  // namespace moeserve::jinja
