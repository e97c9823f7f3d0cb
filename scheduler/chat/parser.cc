#include "scheduler/chat/parser.h"

#include <algorithm>
#include <initializer_list>
#include <optional>
#include <string_view>
#include <utility>

#include "absl/strings/str_join.h"
#include "scheduler/chat/builtins.h"
#include "scheduler/chat/str_cat.h"

namespace moeserve::jinja {
namespace {

using Kind = Expr::Kind;

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

  ExprPtr NewExpr(Kind kind, int line) {
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

// --------------------------------------------------------------- expressions

ExprPtr Parser::ParseAssignTarget(bool with_namespace,
                                  std::initializer_list<std::string_view> end_names) {
  const int line = Cur().line;
  if (with_namespace && Cur().kind == TokenKind::kName && IsOp(Look(), ".")) {
    ExprPtr e = NewExpr(Kind::kNsRef, line);
    e->name = Cur().text;
    Next();
    Next();
    const Token* attr = ExpectName();
    if (!attr) return nullptr;
    e->attr = attr->text;
    return Finish(std::move(e));
  }
  ExprPtr target = ParseTuple(true, true, end_names, false);
  if (!target) return nullptr;
  auto assignable = [](const Expr& e) { return e.kind == Kind::kName; };
  bool ok = assignable(*target);
  if (target->kind == Kind::kTuple) {
    ok = std::all_of(target->operands.begin(), target->operands.end(),
                     [&](const ExprPtr& item) { return assignable(*item); });
  }
  if (!ok) return Fail(line, "can only assign to names, tuples of names or namespace attributes");
  return target;
}

ExprPtr Parser::ParseTuple(bool simplified, bool with_condexpr,
                           std::initializer_list<std::string_view> end_names,
                           bool explicit_parens) {
  const int line = Cur().line;
  std::vector<ExprPtr> items;
  bool is_tuple = false;
  auto at_end = [&] {
    const Token& t = Cur();
    if (t.kind == TokenKind::kVariableEnd || t.kind == TokenKind::kBlockEnd || IsOp(t, ")")) {
      return true;
    }
    for (std::string_view name : end_names) {
      if (IsName(t, name)) return true;
    }
    return false;
  };
  while (!failed()) {
    if (!items.empty() && !ExpectOp(",")) return nullptr;
    if (at_end()) break;
    ExprPtr item = simplified ? ParsePrimary() : ParseExpression(with_condexpr);
    if (!item) return nullptr;
    items.push_back(std::move(item));
    if (!IsOp(Cur(), ",")) break;
    is_tuple = true;
  }
  if (failed()) return nullptr;
  if (!is_tuple) {
    if (!items.empty()) return std::move(items[0]);
    if (!explicit_parens) {
      return Fail(Cur().line, Cat("expected an expression, got ", Describe(Cur())));
    }
  }
  ExprPtr e = NewExpr(Kind::kTuple, line);
  e->operands = std::move(items);
  return Finish(std::move(e));
}

ExprPtr Parser::ParseExpression(bool with_condexpr) {
  return with_condexpr ? ParseCondExpr() : ParseOr();
}

ExprPtr Parser::ParseCondExpr() {
  Nesting nesting(*this, expr_nesting_, kMaxExprDepth, "expressions");
  if (failed()) return nullptr;
  int line = Cur().line;
  ExprPtr expr1 = ParseOr();
  while (expr1 && SkipName("if")) {
    ExprPtr cond = ParseOr();
    if (!cond) return nullptr;
    ExprPtr otherwise;
    if (SkipName("else")) {
      otherwise = ParseCondExpr();
      if (!otherwise) return nullptr;
    }
    ExprPtr e = NewExpr(Kind::kCondExpr, line);
    e->operands.push_back(std::move(expr1));
    e->operands.push_back(std::move(cond));
    e->operands.push_back(std::move(otherwise));
    expr1 = Finish(std::move(e));
    line = Cur().line;
  }
  return expr1;
}

ExprPtr Parser::Binary(std::string op, ExprPtr left, ExprPtr right, int line) {
  if (!left || !right) return nullptr;
  ExprPtr e = NewExpr(Kind::kBinary, line);
  e->op = std::move(op);
  e->operands.push_back(std::move(left));
  e->operands.push_back(std::move(right));
  return Finish(std::move(e));
}

ExprPtr Parser::ParseOr() {
  const int line = Cur().line;
  ExprPtr left = ParseAnd();
  while (left && SkipName("or")) left = Binary("or", std::move(left), ParseAnd(), line);
  return left;
}

ExprPtr Parser::ParseAnd() {
  const int line = Cur().line;
  ExprPtr left = ParseNot();
  while (left && SkipName("and")) left = Binary("and", std::move(left), ParseNot(), line);
  return left;
}

ExprPtr Parser::ParseNot() {
  if (!IsName(Cur(), "not")) return ParseCompare();
  Nesting nesting(*this, expr_nesting_, kMaxExprDepth, "expressions");
  if (failed()) return nullptr;
  const int line = Cur().line;
  Next();
  ExprPtr operand = ParseNot();
  if (!operand) return nullptr;
  ExprPtr e = NewExpr(Kind::kNot, line);
  e->operands.push_back(std::move(operand));
  return Finish(std::move(e));
}

ExprPtr Parser::ParseCompare() {
  const int line = Cur().line;
  ExprPtr first = ParseMath1();
  if (!first) return nullptr;
  ExprPtr e = NewExpr(Kind::kCompare, line);
  e->operands.push_back(std::move(first));
  static constexpr std::pair<std::string_view, CompareOp> kOps[] = {
      {"==", CompareOp::kEq}, {"!=", CompareOp::kNe}, {"<", CompareOp::kLt},
      {"<=", CompareOp::kLe}, {">", CompareOp::kGt},  {">=", CompareOp::kGe}};
  while (!failed()) {
    std::optional<CompareOp> op;
    for (const auto& [text, value] : kOps) {
      if (IsOp(Cur(), text)) op = value;
    }
    if (op) {
      Next();
    } else if (IsName(Cur(), "in")) {
      Next();
      op = CompareOp::kIn;
    } else if (IsName(Cur(), "not") && IsName(Look(), "in")) {
      Next();
      Next();
      op = CompareOp::kNotIn;
    } else {
      break;
    }
    ExprPtr operand = ParseMath1();
    if (!operand) return nullptr;
    e->compare_ops.push_back(*op);
    e->operands.push_back(std::move(operand));
  }
  if (failed()) return nullptr;
  if (e->compare_ops.empty()) return std::move(e->operands[0]);
  return Finish(std::move(e));
}

ExprPtr Parser::ParseMath1() {
  const int line = Cur().line;
  ExprPtr left = ParseConcat();
  while (left && (IsOp(Cur(), "+") || IsOp(Cur(), "-"))) {
    std::string op = Cur().text;
    Next();
    left = Binary(std::move(op), std::move(left), ParseConcat(), line);
  }
  return left;
}

ExprPtr Parser::ParseConcat() {
  const int line = Cur().line;
  ExprPtr first = ParseMath2();
  if (!first || !IsOp(Cur(), "~")) return first;
  ExprPtr e = NewExpr(Kind::kConcat, line);
  e->operands.push_back(std::move(first));
  while (SkipOp("~")) {
    ExprPtr next = ParseMath2();
    if (!next) return nullptr;
    e->operands.push_back(std::move(next));
  }
  return Finish(std::move(e));
}

ExprPtr Parser::ParseMath2() {
  const int line = Cur().line;
  ExprPtr left = ParsePow();
  while (left && (IsOp(Cur(), "*") || IsOp(Cur(), "/") || IsOp(Cur(), "//") || IsOp(Cur(), "%"))) {
    std::string op = Cur().text;
    Next();
    left = Binary(std::move(op), std::move(left), ParsePow(), line);
  }
  return left;
}

ExprPtr Parser::ParsePow() {
  const int line = Cur().line;
  ExprPtr left = ParseUnary(true);
  while (left && SkipOp("**")) left = Binary("**", std::move(left), ParseUnary(true), line);
  return left;
}

ExprPtr Parser::ParseUnary(bool with_filter) {
  Nesting nesting(*this, expr_nesting_, kMaxExprDepth, "expressions");
  if (failed()) return nullptr;
  const int line = Cur().line;
  ExprPtr node;
  if (IsOp(Cur(), "-") || IsOp(Cur(), "+")) {
    const Kind kind = Cur().text == "-" ? Kind::kNeg : Kind::kPos;
    Next();
    ExprPtr operand = ParseUnary(false);
    if (!operand) return nullptr;
    node = NewExpr(kind, line);
    node->operands.push_back(std::move(operand));
    node = Finish(std::move(node));
  } else {
    node = ParsePrimary();
  }
  node = ParsePostfix(std::move(node));
  if (with_filter) node = ParseFilterExpr(std::move(node));
  return node;
}

ExprPtr Parser::ParsePrimary() {
  const Token& t = Cur();
  const int line = t.line;
  if (t.kind == TokenKind::kName) {
    ExprPtr e = NewExpr(Kind::kLiteral, line);
    if (t.text == "true" || t.text == "True" || t.text == "false" || t.text == "False") {
      e->literal = Value::Bool(t.text == "true" || t.text == "True");
    } else if (t.text == "none" || t.text == "None") {
      e->literal = Value::None();
    } else {
      e->kind = Kind::kName;
      e->name = t.text;
      saw_varargs_ |= t.text == "varargs";
      saw_kwargs_ |= t.text == "kwargs";
    }
    Next();
    return Finish(std::move(e));
  }
  if (t.kind == TokenKind::kString) {
    std::string text;
    while (Cur().kind == TokenKind::kString) {
      text += Cur().text;
      Next();
    }
    ExprPtr e = NewExpr(Kind::kLiteral, line);
    e->literal = Value::String(std::move(text));
    return Finish(std::move(e));
  }
  if (t.kind == TokenKind::kInteger || t.kind == TokenKind::kFloat) {
    ExprPtr e = NewExpr(Kind::kLiteral, line);
    e->literal =
        t.kind == TokenKind::kInteger ? Value::Int(t.int_value) : Value::Float(t.float_value);
    Next();
    return Finish(std::move(e));
  }
  if (IsOp(t, "(")) {
    Next();
    ExprPtr e = ParseTuple(false, true, {}, true);
    if (!e || !ExpectOp(")")) return nullptr;
    return e;
  }
  if (IsOp(t, "[")) return ParseList();
  if (IsOp(t, "{")) return ParseDict();
  return Fail(line, Cat("unexpected ", Describe(t)));
}

ExprPtr Parser::ParseList() {
  ExprPtr e = NewExpr(Kind::kList, Cur().line);
  Next();
  while (!failed() && !IsOp(Cur(), "]")) {
    if (!e->operands.empty() && !ExpectOp(",")) return nullptr;
    if (IsOp(Cur(), "]")) break;
    ExprPtr item = ParseExpression();
    if (!item) return nullptr;
    e->operands.push_back(std::move(item));
  }
  if (!ExpectOp("]")) return nullptr;
  return Finish(std::move(e));
}

ExprPtr Parser::ParseDict() {
  ExprPtr e = NewExpr(Kind::kDict, Cur().line);
  Next();
  while (!failed() && !IsOp(Cur(), "}")) {
    if (!e->operands.empty() && !ExpectOp(",")) return nullptr;
    if (IsOp(Cur(), "}")) break;
    ExprPtr key = ParseExpression();
    if (!key || !ExpectOp(":")) return nullptr;
    ExprPtr value = ParseExpression();
    if (!value) return nullptr;
    e->operands.push_back(std::move(key));
    e->operands.push_back(std::move(value));
  }
  if (!ExpectOp("}")) return nullptr;
  return Finish(std::move(e));
}

ExprPtr Parser::ParsePostfix(ExprPtr node) {
  while (node) {
    if (IsOp(Cur(), ".") || IsOp(Cur(), "[")) {
      node = ParseSubscript(std::move(node));
    } else if (IsOp(Cur(), "(")) {
      ExprPtr call = NewExpr(Kind::kCall, Cur().line);
      call->operands.push_back(std::move(node));
      if (!ParseArgs(call->args)) return nullptr;
      node = Finish(std::move(call));
    } else {
      break;
    }
  }
  return node;
}

ExprPtr Parser::ParseFilterExpr(ExprPtr node) {
  while (node) {
    if (IsOp(Cur(), "|")) {
      node = ParseFilter(std::move(node), false);
    } else if (IsName(Cur(), "is")) {
      node = ParseTest(std::move(node));
    } else if (IsOp(Cur(), "(")) {
      ExprPtr call = NewExpr(Kind::kCall, Cur().line);
      call->operands.push_back(std::move(node));
      if (!ParseArgs(call->args)) return nullptr;
      node = Finish(std::move(call));
    } else {
      break;
    }
  }
  return node;
}

ExprPtr Parser::ParseSubscript(ExprPtr node) {
  const Token& t = Cur();
  const int line = t.line;
  Next();
  if (t.text == ".") {
    const Token& attr = Cur();
    Next();
    if (attr.kind == TokenKind::kName) {
      ExprPtr e = NewExpr(Kind::kGetAttr, line);
      e->name = attr.text;
      e->operands.push_back(std::move(node));
      return Finish(std::move(e));
    }
    if (attr.kind != TokenKind::kInteger)
      return Fail(attr.line, "expected name or number after '.'");
    ExprPtr index = NewExpr(Kind::kLiteral, attr.line);
    index->literal = Value::Int(attr.int_value);
    ExprPtr e = NewExpr(Kind::kGetItem, line);
    e->operands.push_back(std::move(node));
    e->operands.push_back(Finish(std::move(index)));
    return Finish(std::move(e));
  }
  std::vector<ExprPtr> args;
  while (!failed() && !IsOp(Cur(), "]")) {
    if (!args.empty() && !ExpectOp(",")) return nullptr;
    ExprPtr arg = ParseSubscribed();
    if (!arg) return nullptr;
    args.push_back(std::move(arg));
  }
  if (!ExpectOp("]")) return nullptr;
  if (args.empty()) return Fail(line, "expected a subscript expression");
  ExprPtr index;
  if (args.size() == 1) {
    index = std::move(args[0]);
  } else {
    index = NewExpr(Kind::kTuple, line);
    index->operands = std::move(args);
    index = Finish(std::move(index));
  }
  ExprPtr e = NewExpr(Kind::kGetItem, line);
  e->operands.push_back(std::move(node));
  e->operands.push_back(std::move(index));
  return Finish(std::move(e));
}

ExprPtr Parser::ParseSubscribed() {
  const int line = Cur().line;
  ExprPtr slice = NewExpr(Kind::kSlice, line);
  if (SkipOp(":")) {
    slice->operands.push_back(nullptr);
  } else {
    ExprPtr start = ParseExpression();
    if (!start || !IsOp(Cur(), ":")) return start;
    Next();
    slice->operands.push_back(std::move(start));
  }
  auto at_close = [&] { return IsOp(Cur(), "]") || IsOp(Cur(), ","); };
  if (IsOp(Cur(), ":") || at_close()) {
    slice->operands.push_back(nullptr);
  } else {
    ExprPtr stop = ParseExpression();
    if (!stop) return nullptr;
    slice->operands.push_back(std::move(stop));
  }
  if (SkipOp(":") && !at_close()) {
    ExprPtr step = ParseExpression();
    if (!step) return nullptr;
    slice->operands.push_back(std::move(step));
  } else {
    slice->operands.push_back(nullptr);
  }
  return Finish(std::move(slice));
}

bool Parser::ParseArgs(ArgList& args) {
  const int line = Cur().line;
  if (!ExpectOp("(")) return false;
  bool require_comma = false;
  auto invalid = [&] {
    Fail(line, "invalid syntax for function call expression");
    return false;
  };
  while (!failed() && !IsOp(Cur(), ")")) {
    if (require_comma) {
      if (!ExpectOp(",")) return false;
      if (IsOp(Cur(), ")")) break;
    }
    if (SkipOp("*")) {
      if (args.star_args || args.star_kwargs) return invalid();
      args.star_args = ParseExpression();
    } else if (SkipOp("**")) {
      if (args.star_kwargs) return invalid();
      args.star_kwargs = ParseExpression();
    } else if (Cur().kind == TokenKind::kName && IsOp(Look(), "=")) {
      if (args.star_kwargs) return invalid();
      std::string key = Cur().text;
      Next();
      Next();
      ExprPtr value = ParseExpression();
      if (!value) return false;
      args.keywords.emplace_back(std::move(key), std::move(value));
    } else {
      if (args.star_args || args.star_kwargs || !args.keywords.empty()) return invalid();
      ExprPtr value = ParseExpression();
      if (!value) return false;
      args.positional.push_back(std::move(value));
    }
    require_comma = true;
  }
  return !failed() && ExpectOp(")");
}

ExprPtr Parser::ParseFilter(ExprPtr node, bool start_inline) {
  while (!failed() && (IsOp(Cur(), "|") || start_inline)) {
    if (!start_inline) Next();
    start_inline = false;
    const Token* name = ExpectName();
    if (!name) return nullptr;
    ExprPtr e = NewExpr(Kind::kFilter, name->line);
    e->name = name->text;
    while (SkipOp(".")) {
      const Token* part = ExpectName();
      if (!part) return nullptr;
      e->name += "." + part->text;
    }
    if (IsOp(Cur(), "(") && !ParseArgs(e->args)) return nullptr;
    e->operands.push_back(std::move(node));
    node = Finish(std::move(e));
  }
  return failed() ? nullptr : std::move(node);
}

ExprPtr Parser::ParseTest(ExprPtr node) {
  const int line = Cur().line;
  Next();  // is
  ExprPtr e = NewExpr(Kind::kTest, line);
  e->negated = SkipName("not");
  const Token* name = ExpectName();
  if (!name) return nullptr;
  e->name = name->text;
  while (SkipOp(".")) {
    const Token* part = ExpectName();
    if (!part) return nullptr;
    e->name += "." + part->text;
  }
  const Token& t = Cur();
  if (IsOp(t, "(")) {
    if (!ParseArgs(e->args)) return nullptr;
  } else if ((t.kind == TokenKind::kName || t.kind == TokenKind::kString ||
              t.kind == TokenKind::kInteger || t.kind == TokenKind::kFloat || IsOp(t, "[") ||
              IsOp(t, "{")) &&
             !IsName(t, "else") && !IsName(t, "or") && !IsName(t, "and")) {
    if (IsName(t, "is")) return Fail(t.line, "you cannot chain multiple tests with is");
    ExprPtr arg = ParsePostfix(ParsePrimary());
    if (!arg) return nullptr;
    e->args.positional.push_back(std::move(arg));
  }
  e->operands.push_back(std::move(node));
  return Finish(std::move(e));
}

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
  return Parser(tokens).Run();
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
