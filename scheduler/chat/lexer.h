// Splits Jinja2 template source into tokens, reproducing the lexer of Jinja2
// 3.x in the environment Hugging Face transformers uses for chat templates:
// trim_blocks=True (the first newline after a block or comment tag is
// dropped), lstrip_blocks=True (spaces and tabs before a block or comment tag
// at the start of a line are dropped), `{%-`/`-%}` strip all whitespace,
// `{%+`/`+%}` keep it, newlines are normalized to \n, one trailing newline of
// the source is dropped, comments are removed and raw blocks become text.
#ifndef MOESERVE_SCHEDULER_CHAT_LEXER_H_
#define MOESERVE_SCHEDULER_CHAT_LEXER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace moeserve::jinja {

enum class TokenKind {
  kData,           // template text, already whitespace-controlled
  kVariableBegin,  // {{
  kVariableEnd,    // }}
  kBlockBegin,     // {%
  kBlockEnd,       // %}
  kName,           // identifiers and keywords (if, in, not, true, ...)
  kString,         // text holds the unescaped value
  kInteger,
  kFloat,
  kOperator,  // text holds the operator: + - * / // % ** ~ ( ) [ ] { } == != < <= > >= = . : | ,
  kEof,
};

struct Token {
  TokenKind kind;
  std::string text;
  int line = 1;  // 1-based line of the token's first character
  int64_t int_value = 0;
  double float_value = 0.0;
};

// Fails with InvalidArgument naming the line on malformed input: an unclosed
// tag, comment, string or raw block, or a character that starts no token.
absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source);

}  // namespace moeserve::jinja

#endif  // MOESERVE_SCHEDULER_CHAT_LEXER_H_
