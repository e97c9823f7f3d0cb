// Statement parsing (expressions are in parser_expressions.cc), Parse and
// Compile.
#include "scheduler/chat/parser.h"

#include <algorithm>
#include <initializer_list>
#include <string_view>
#include <utility>

#include "absl/strings/str_join.h"
#include "scheduler/chat/builtins.h"
#include "scheduler/chat/parser_internal.h"
#include "scheduler/chat/str_cat.h"

namespace moeserve::jinja {
namespace internal {

using Kind = Expr::Kind;

ExprPtr Parser::Finish(ExprPtr e) {
  if (!e || failed()) return nullptr;
  int height = 0;
  auto visit = [&height](const ExprPtr& child) {
    if (child) height = std::max(height, child->depth);
  };
  for (const ExprPtr& child : e->operands) visit(child);
  for (const ExprPtr& child : e->args.positional) visit(child);
  for (const auto& [name, child] : e->args.keywords) visit(child);
  visit(e->args.star_args);
  visit(e->args.star_kwargs);
  e->depth = height + 1;
  if (e->depth > kMaxExprDepth) {
    return Fail(e->line, Cat("expression nested more than ", kMaxExprDepth, " levels deep"));
  }
  return e;
}

// ---------------------------------------------------------------- statements

StmtList Parser::Subparse(std::initializer_list<std::string_view> end_tags) {
  StmtList body;
  while (!failed()) {
    const Token& t = Cur();
    if (t.kind == TokenKind::kData) {
      StmtPtr s = NewStmt(Stmt::Kind::kText, t.line);
      s->text = t.text;
      body.push_back(std::move(s));
      Next();
    } else if (t.kind == TokenKind::kVariableBegin) {
      Next();
      StmtPtr s = NewStmt(Stmt::Kind::kOutput, t.line);
      ExprPtr e = ParseTuple(false, true, {}, false);
      if (!e || !Expect(TokenKind::kVariableEnd, "'}}'")) break;
      s->exprs.push_back(std::move(e));
      body.push_back(std::move(s));
    } else if (t.kind == TokenKind::kBlockBegin) {
      Next();
      for (std::string_view tag : end_tags) {
        if (IsName(Cur(), tag)) return body;
      }
      StmtPtr s = ParseStatement();
      if (!s || !Expect(TokenKind::kBlockEnd, "'%}'")) break;
      body.push_back(std::move(s));
    } else if (t.kind == TokenKind::kEof) {
      if (end_tags.size() > 0) {
        std::vector<std::string> quoted;
        for (std::string_view tag : end_tags) quoted.push_back(Cat("'", tag, "'"));
        Fail(t.line, Cat("unexpected end of template; expected ", absl::StrJoin(quoted, " or ")));
      }
      break;
    } else {
      Fail(t.line, Cat("unexpected ", Describe(t)));
    }
  }
  return body;
}

StmtList Parser::ParseBody(std::initializer_list<std::string_view> end_tags, bool drop_needle) {
  Nesting nesting(*this, block_nesting_, kMaxBlockNesting, "blocks");
  if (failed()) return {};
  SkipOp(":");
  if (failed() || !Expect(TokenKind::kBlockEnd, "'%}'")) return {};
  StmtList body = Subparse(end_tags);
  if (drop_needle) Next();
  return body;
}

StmtPtr Parser::ParseStatement() {
  const Token& t = Cur();
  if (t.kind != TokenKind::kName) return Fail(t.line, "tag name expected");
  const std::string& tag = t.text;
  if (tag == "for") return ParseFor();
  if (tag == "if") return ParseIf();
  if (tag == "set") return ParseSet();
  if (tag == "macro") return ParseMacro();
  if (tag == "with") return ParseWith();
  if (tag == "filter") return ParseSimpleBlock(Stmt::Kind::kFilterBlock, "endfilter");
  if (tag == "generation") return ParseSimpleBlock(Stmt::Kind::kGeneration, "endgeneration");
  if (tag == "print") {
    StmtPtr s = NewStmt(Stmt::Kind::kOutput, t.line);
    Next();
    while (!failed() && Cur().kind != TokenKind::kBlockEnd) {
      if (!s->exprs.empty() && !ExpectOp(",")) break;
      ExprPtr e = ParseExpression();
      if (e) s->exprs.push_back(std::move(e));
    }
    return failed() ? nullptr : std::move(s);
  }
  if (tag == "break" || tag == "continue") {
    if (loop_depth_ == 0) return Fail(t.line, Cat("'", tag, "' outside of a loop"));
    StmtPtr s = NewStmt(tag == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue, t.line);
    Next();
    return s;
  }
  static constexpr std::string_view kUnsupported[] = {"block", "extends", "include",    "import",
                                                      "from",  "call",    "autoescape", "do"};
  for (std::string_view u : kUnsupported) {
    if (tag == u) {
      return Fail(t.line, Cat("{% ", tag, " %} is not supported in chat templates"));
    }
  }
  if (tag.rfind("end", 0) == 0 || tag == "else" || tag == "elif") {
    return Fail(t.line, Cat("unexpected '", tag, "' (no open block it could close)"));
  }
  return Fail(t.line, Cat("unknown tag '", tag, "'"));
}

StmtPtr Parser::ParseFor() {
  StmtPtr s = NewStmt(Stmt::Kind::kFor, Cur().line);
  Next();
  s->target = ParseAssignTarget(false, {"in"});
  if (!s->target || !SkipName("in")) return Fail(Cur().line, "expected 'in' in for loop");
  ExprPtr iter = ParseTuple(false, false, {"recursive"}, false);
  if (!iter) return nullptr;
  s->exprs.push_back(std::move(iter));
  if (SkipName("if")) {
    ExprPtr test = ParseExpression();
    if (!test) return nullptr;
    s->exprs.push_back(std::move(test));
  }
  if (IsName(Cur(), "recursive")) return Fail(Cur().line, "recursive for loops are not supported");
  ++loop_depth_;
  s->bodies.push_back(ParseBody({"endfor", "else"}, false));
  --loop_depth_;
  if (failed()) return nullptr;
  const bool has_else = IsName(Cur(), "else");
  Next();
  s->bodies.push_back(has_else ? ParseBody({"endfor"}, true) : StmtList());
  return failed() ? nullptr : std::move(s);
}

StmtPtr Parser::ParseIf() {
  StmtPtr s = NewStmt(Stmt::Kind::kIf, Cur().line);
  Next();
  while (true) {
    ExprPtr test = ParseTuple(false, false, {}, false);
    if (!test) return nullptr;
    s->exprs.push_back(std::move(test));
    s->bodies.push_back(ParseBody({"elif", "else", "endif"}, false));
    if (failed()) return nullptr;
    const std::string tag = Cur().text;
    Next();
    if (tag == "elif") continue;
    s->bodies.push_back(tag == "else" ? ParseBody({"endif"}, true) : StmtList());
    break;
  }
  return failed() ? nullptr : std::move(s);
}

StmtPtr Parser::ParseSet() {
  const int line = Cur().line;
  Next();
  ExprPtr target = ParseAssignTarget(true, {});
  if (!target) return nullptr;
  if (SkipOp("=")) {
    StmtPtr s = NewStmt(Stmt::Kind::kSet, line);
    s->target = std::move(target);
    ExprPtr value = ParseTuple(false, true, {}, false);
    if (!value) return nullptr;
    s->exprs.push_back(std::move(value));
    return s;
  }
  StmtPtr s = NewStmt(Stmt::Kind::kSetBlock, line);
  s->target = std::move(target);
  if (IsOp(Cur(), "|")) {
    s->filter = ParseFilter(nullptr, false);
    if (!s->filter) return nullptr;
  }
  s->bodies.push_back(ParseBody({"endset"}, true));
  return failed() ? nullptr : std::move(s);
}

StmtPtr Parser::ParseMacro() {
  StmtPtr s = NewStmt(Stmt::Kind::kMacro, Cur().line);
  Next();
  const Token* name = ExpectName();
  if (!name || !ExpectOp("(")) return nullptr;
  s->name = name->text;
  while (!failed() && !IsOp(Cur(), ")")) {
    if (!s->params.empty() && !ExpectOp(",")) return nullptr;
    const Token* param = ExpectName();
    if (!param) return nullptr;
    s->params.push_back(param->text);
    ExprPtr dflt;
    if (SkipOp("=")) {
      dflt = ParseExpression();
      if (!dflt) return nullptr;
    } else if (!s->defaults.empty() && s->defaults.back()) {
      return Fail(param->line, "non-default argument follows default argument");
    }
    s->defaults.push_back(std::move(dflt));
  }
  if (!ExpectOp(")")) return nullptr;
  const int saved_loop_depth = loop_depth_;
  const bool saved_varargs = std::exchange(saw_varargs_, false);
  const bool saved_kwargs = std::exchange(saw_kwargs_, false);
  loop_depth_ = 0;  // a loop around the definition is not a loop around the body
  s->bodies.push_back(ParseBody({"endmacro"}, true));
  loop_depth_ = saved_loop_depth;
  s->catches_varargs = saw_varargs_;
  s->catches_kwargs = saw_kwargs_;
  saw_varargs_ = saved_varargs;
  saw_kwargs_ = saved_kwargs;
  return failed() ? nullptr : std::move(s);
}

StmtPtr Parser::ParseWith() {
  StmtPtr s = NewStmt(Stmt::Kind::kWith, Cur().line);
  Next();
  while (!failed() && Cur().kind != TokenKind::kBlockEnd) {
    if (!s->targets.empty() && !ExpectOp(",")) return nullptr;
    ExprPtr target = ParseAssignTarget(false, {});
    if (!target || !ExpectOp("=")) return nullptr;
    ExprPtr value = ParseExpression();
    if (!value) return nullptr;
    s->targets.push_back(std::move(target));
    s->exprs.push_back(std::move(value));
  }
  s->bodies.push_back(ParseBody({"endwith"}, true));
  return failed() ? nullptr : std::move(s);
}

StmtPtr Parser::ParseSimpleBlock(Stmt::Kind kind, std::string_view end_tag) {
  StmtPtr s = NewStmt(kind, Cur().line);
  Next();
  if (kind == Stmt::Kind::kFilterBlock) {
    s->filter = ParseFilter(nullptr, true);
    if (!s->filter) return nullptr;
  }
  s->bodies.push_back(ParseBody({end_tag}, true));
  return failed() ? nullptr : std::move(s);
}

}  // namespace internal

namespace {

// Jinja reports unknown filters and tests when it compiles a template; so do
// we, so that a template we cannot run fails when the model loads, not on
// the first request that reaches the branch.
absl::Status CheckExpr(const Expr* e) {
  if (e == nullptr) return absl::OkStatus();
  if (e->kind == Expr::Kind::kFilter && FindFilter(e->name) == nullptr) {
    return absl::InvalidArgumentError(Cat("line ", e->line, ": no filter named '", e->name, "'"));
  }
  if (e->kind == Expr::Kind::kTest && FindTest(e->name) == nullptr) {
    return absl::InvalidArgumentError(Cat("line ", e->line, ": no test named '", e->name, "'"));
  }
  std::vector<const Expr*> children;
  for (const auto& c : e->operands) children.push_back(c.get());
  for (const auto& c : e->args.positional) children.push_back(c.get());
  for (const auto& [name, c] : e->args.keywords) children.push_back(c.get());
  children.push_back(e->args.star_args.get());
  children.push_back(e->args.star_kwargs.get());
  for (const Expr* c : children) {
    if (absl::Status s = CheckExpr(c); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status CheckBody(const StmtList& body) {
  for (const auto& stmt : body) {
    std::vector<const Expr*> exprs = {stmt->target.get(), stmt->filter.get()};
    for (const auto& e : stmt->exprs) exprs.push_back(e.get());
    for (const auto& e : stmt->targets) exprs.push_back(e.get());
    for (const auto& e : stmt->defaults) exprs.push_back(e.get());
    for (const Expr* e : exprs) {
      if (absl::Status s = CheckExpr(e); !s.ok()) return s;
    }
    for (const auto& b : stmt->bodies) {
      if (absl::Status s = CheckBody(b); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<TemplateAst>> Parse(const std::vector<Token>& tokens) {
  if (tokens.empty() || tokens.back().kind != TokenKind::kEof) {
    return absl::InvalidArgumentError("token list does not end with end of template");
  }
  return internal::Parser(tokens).Run();
}

absl::StatusOr<std::unique_ptr<TemplateAst>> Compile(std::string_view source) {
  absl::StatusOr<std::vector<Token>> tokens = Tokenize(source);
  if (!tokens.ok()) return tokens.status();
  absl::StatusOr<std::unique_ptr<TemplateAst>> ast = Parse(*tokens);
  if (!ast.ok()) return ast.status();
  if (absl::Status s = CheckBody((*ast)->body); !s.ok()) return s;
  return ast;
}

}  // namespace moeserve::jinja
