// Expression parsing of the Parser (statements are in parser.cc), with
// Jinja2's precedence: conditional < or < and < not < comparisons < + - <
// ~ < * / // % < ** < unary minus/plus < postfix (attribute, item, call) and
// filters/tests.
#include <algorithm>
#include <optional>
#include <utility>

#include "scheduler/chat/parser_internal.h"

namespace moeserve::jinja::internal {

using Kind = Expr::Kind;

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

}  // namespace moeserve::jinja::internal
