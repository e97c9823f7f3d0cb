// Builds the syntax tree of a template from its tokens, following Jinja2's
// grammar and operator precedence (jinja2/parser.py). Tags that make no sense
// for a single in-memory chat template (extends, include, import, block,
// call, autoescape) and recursive loops are refused by name.
#ifndef MOESERVE_SCHEDULER_CHAT_PARSER_H_
#define MOESERVE_SCHEDULER_CHAT_PARSER_H_

#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "scheduler/chat/ast.h"
#include "scheduler/chat/lexer.h"

namespace moeserve::jinja {

// Nesting bounds that keep parsing, rendering and destroying a tree well
// inside a thread's stack: parenthesized or chained expressions, and blocks
// inside blocks. Real chat templates nest less than 15 deep.
inline constexpr int kMaxExprDepth = 128;
inline constexpr int kMaxBlockNesting = 64;

// Fails with InvalidArgument "line N: ..." on a syntax error or an
// unsupported tag.
absl::StatusOr<std::unique_ptr<TemplateAst>> Parse(const std::vector<Token>& tokens);

// Tokenize, Parse, and check that every filter and test the template names
// exists. Jinja reports unknown filters and tests when it compiles a
// template; so do we, so that a template we cannot run fails when the model
// loads rather than on the first request that reaches the branch.
absl::StatusOr<std::unique_ptr<TemplateAst>> Compile(std::string_view source);

}  // namespace moeserve::jinja

#endif  // MOESERVE_SCHEDULER_CHAT_PARSER_H_
