// The recursive-descent parser behind Parse(), shared by the files that
// implement it (parser.cc: statements, parser_expressions.cc: expressions).
// Not an interface of the chat template library.
#ifndef MOESERVE_SCHEDULER_CHAT_PARSER_INTERNAL_H_
#define MOESERVE_SCHEDULER_CHAT_PARSER_INTERNAL_H_

#include <algorithm>
#include <cstddef>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "scheduler/chat/ast.h"
#include "scheduler/chat/lexer.h"
#include "scheduler/chat/parser.h"
#include "scheduler/chat/str_cat.h"

namespace moeserve::jinja::internal {

// Recursive descent over the token list. Errors are sticky: the first one is
// kept in error_, and every parse function returns null once it is set.
class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : tokens_(tokens) {}

  absl::StatusOr<std::unique_ptr<TemplateAst>> Run() {
    auto ast = std::make_unique<TemplateAst>();
    ast->body = Subparse({});
    if (!error_.ok()) return error_;
    return ast;
  }

 private:
  // Counts one level of nesting for the lifetime of the guard.
  class Nesting {
   public:
    Nesting(Parser& p, int& counter, int limit, std::string_view what) : counter_(++counter) {
      if (counter_ > limit) {
        p.Fail(p.Cur().line, Cat(what, " nested more than ", limit, " levels deep"));
      }
    }
    ~Nesting() { --counter_; }

   private:
    int& counter_;
  };

  const Token& Cur() const { return tokens_[pos_]; }
  const Token& Look() const { return tokens_[std::min(pos_ + 1, tokens_.size() - 1)]; }
  void Next() {
    if (pos_ + 1 < tokens_.size()) ++pos_;
  }
  bool failed() const { return !error_.ok(); }
  std::nullptr_t Fail(int line, std::string_view message) {
    if (error_.ok()) error_ = absl::InvalidArgumentError(Cat("line ", line, ": ", message));
    return nullptr;
  }

  static bool IsName(const Token& t, std::string_view name) {
    return t.kind == TokenKind::kName && t.text == name;
  }
  static bool IsOp(const Token& t, std::string_view op) {
    return t.kind == TokenKind::kOperator && t.text == op;
  }
  static std::string Describe(const Token& t) {
    switch (t.kind) {
      case TokenKind::kEof:
        return "end of template";
      case TokenKind::kBlockEnd:
        return "end of statement block";
      case TokenKind::kVariableEnd:
        return "end of print statement";
      case TokenKind::kData:
        return "template data";
      default:
        return Cat("'", t.text, "'");
    }
  }
  bool SkipOp(std::string_view op) {
    if (!IsOp(Cur(), op)) return false;
    Next();
    return true;
  }
  bool SkipName(std::string_view name) {
    if (!IsName(Cur(), name)) return false;
    Next();
    return true;
  }
  bool Expect(TokenKind kind, std::string_view what) {
    if (Cur().kind == kind) {
      Next();
      return true;
    }
    Fail(Cur().line, Cat("expected ", what, ", got ", Describe(Cur())));
    return false;
  }
  bool ExpectOp(std::string_view op) {
    if (SkipOp(op)) return true;
    Fail(Cur().line, Cat("expected '", op, "', got ", Describe(Cur())));
    return false;
  }
  const Token* ExpectName() {
    if (Cur().kind != TokenKind::kName) {
      Fail(Cur().line, Cat("expected a name, got ", Describe(Cur())));
      return nullptr;
    }
    const Token* t = &Cur();
    Next();
    return t;
  }

  ExprPtr NewExpr(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }
  // Sets e's height from its children; fails when it passes kMaxExprDepth.
  ExprPtr Finish(ExprPtr e);

  // Statements.
  StmtList Subparse(std::initializer_list<std::string_view> end_tags);
  // Parses `%} body` up to one of end_tags; drop_needle consumes that tag name.
  StmtList ParseBody(std::initializer_list<std::string_view> end_tags, bool drop_needle);
  StmtPtr ParseStatement();
  StmtPtr ParseFor();
  StmtPtr ParseIf();
  StmtPtr ParseSet();
  StmtPtr ParseMacro();
  StmtPtr ParseWith();
  StmtPtr ParseSimpleBlock(Stmt::Kind kind, std::string_view end_tag);
  StmtPtr NewStmt(Stmt::Kind kind, int line) {
    auto s = std::make_unique<Stmt>();
    s->kind = kind;
    s->line = line;
    return s;
  }

  // Expressions, from lowest to highest precedence.
  ExprPtr ParseAssignTarget(bool with_namespace, std::initializer_list<std::string_view> end_names);
  ExprPtr ParseTuple(bool simplified, bool with_condexpr,
                     std::initializer_list<std::string_view> end_names, bool explicit_parens);
  ExprPtr ParseExpression(bool with_condexpr = true);
  ExprPtr ParseCondExpr();
  ExprPtr ParseOr();
  ExprPtr ParseAnd();
  ExprPtr ParseNot();
  ExprPtr ParseCompare();
  ExprPtr ParseMath1();
  ExprPtr ParseConcat();
  ExprPtr ParseMath2();
  ExprPtr ParsePow();
  ExprPtr ParseUnary(bool with_filter);
  ExprPtr ParsePrimary();
  ExprPtr ParseList();
  ExprPtr ParseDict();
  ExprPtr ParsePostfix(ExprPtr node);
  ExprPtr ParseFilterExpr(ExprPtr node);
  ExprPtr ParseSubscript(ExprPtr node);
  ExprPtr ParseSubscribed();
  bool ParseArgs(ArgList& args);
  ExprPtr ParseFilter(ExprPtr node, bool start_inline);
  ExprPtr ParseTest(ExprPtr node);
  ExprPtr Binary(std::string op, ExprPtr left, ExprPtr right, int line);

  const std::vector<Token>& tokens_;
  size_t pos_ = 0;
  absl::Status error_;
  int expr_nesting_ = 0;      // active recursive expression parses
  int block_nesting_ = 0;     // active nested statement bodies
  int loop_depth_ = 0;        // enclosing for loops (inside the current macro), for break/continue
  bool saw_varargs_ = false;  // the current macro body names `varargs`
  bool saw_kwargs_ = false;   // ... or `kwargs`
};

}  // namespace moeserve::jinja::internal

#endif  // MOESERVE_SCHEDULER_CHAT_PARSER_INTERNAL_H_
