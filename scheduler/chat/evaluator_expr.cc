// Expression evaluation of the Renderer (statements are in evaluator.cc).
#include <utility>

#include "scheduler/chat/builtins.h"
#include "scheduler/chat/evaluator.h"
#include "scheduler/chat/operators.h"
#include "scheduler/chat/str_cat.h"

namespace moeserve::jinja {

Value Renderer::Eval(const Expr& expr, Scope& scope) {
  DepthGuard guard(*this, expr.line);
  if (failed()) return Value();
  // Turns a helper's StatusOr into a value, recording its error here.
  auto take = [&](absl::StatusOr<Value> r) {
    return r.ok() ? *std::move(r) : Fail(expr.line, r.status());
  };
  switch (expr.kind) {
    case Expr::Kind::kLiteral:
      return expr.literal;
    case Expr::Kind::kName: {
      const Value* v = scope.Lookup(expr.name);
      return v != nullptr ? *v : Value::Undefined(Cat("'", expr.name, "' is undefined"));
    }
    case Expr::Kind::kGetAttr: {
      const Value obj = Eval(*expr.operands[0], scope);
      if (failed()) return Value();
      return take(GetAttr(obj, expr.name));
    }
    case Expr::Kind::kGetItem: {
      const Value obj = Eval(*expr.operands[0], scope);
      if (failed()) return Value();
      const Expr& index = *expr.operands[1];
      if (index.kind == Expr::Kind::kSlice) {
        Value bounds[3] = {Value::None(), Value::None(), Value::None()};
        for (int i = 0; i < 3; ++i) {
          if (index.operands[i]) bounds[i] = Eval(*index.operands[i], scope);
        }
        if (failed()) return Value();
        return take(GetSlice(obj, bounds[0], bounds[1], bounds[2]));
      }
      const Value key = Eval(index, scope);
      if (failed()) return Value();
      return take(GetItem(obj, key));
    }
    case Expr::Kind::kCall: {
      const Value callee = Eval(*expr.operands[0], scope);
      CallArgs args;
      if (failed() || !EvalArgs(expr.args, scope, args, expr.line)) return Value();
      return take(Call(callee, std::move(args)));
    }
    case Expr::Kind::kFilter:
      return EvalFilter(expr, scope, nullptr);
    case Expr::Kind::kTest: {
      const Value input = Eval(*expr.operands[0], scope);
      CallArgs args;
      if (failed() || !EvalArgs(expr.args, scope, args, expr.line)) return Value();
      absl::StatusOr<bool> r = ApplyTest(expr.name, input, std::move(args));
      if (!r.ok()) return Fail(expr.line, r.status());
      return Value::Bool(*r != expr.negated);
    }
    case Expr::Kind::kNeg:
    case Expr::Kind::kPos: {
      const Value v = Eval(*expr.operands[0], scope);
      if (failed()) return Value();
      return take(UnaryOp(expr.kind == Expr::Kind::kNeg ? "-" : "+", v));
    }
    case Expr::Kind::kNot: {
      const Value v = Eval(*expr.operands[0], scope);
      return failed() ? Value() : Value::Bool(!v.Truthy());
    }
    case Expr::Kind::kBinary: {
      Value left = Eval(*expr.operands[0], scope);
      if (failed()) return Value();
      // and/or return an operand, as in Python, and short-circuit.
      if (expr.op == "and") return left.Truthy() ? Eval(*expr.operands[1], scope) : left;
      if (expr.op == "or") return left.Truthy() ? left : Eval(*expr.operands[1], scope);
      const Value right = Eval(*expr.operands[1], scope);
      if (failed()) return Value();
      return take(BinaryOp(expr.op, left, right, limits_.max_output_bytes));
    }
    case Expr::Kind::kCompare:
      return EvalCompare(expr, scope);
    case Expr::Kind::kConcat: {
      std::string text;
      for (const ExprPtr& e : expr.operands) {
        const Value v = Eval(*e, scope);
        if (failed()) return Value();
        text += ToPyStr(v);
        if (static_cast<int64_t>(text.size()) > limits_.max_output_bytes) {
          return Fail(expr.line, absl::InvalidArgumentError("concatenated text too long"));
        }
      }
      return Value::String(std::move(text));
    }
    case Expr::Kind::kCondExpr: {
      const Value test = Eval(*expr.operands[1], scope);
      if (failed()) return Value();
      if (test.Truthy()) return Eval(*expr.operands[0], scope);
      if (expr.operands[2]) return Eval(*expr.operands[2], scope);
      return Value::Undefined(Cat("the inline if-expression on line ", expr.line,
                                  " evaluated to false and no else section was defined."));
    }
    case Expr::Kind::kList:
    case Expr::Kind::kTuple:
    case Expr::Kind::kDict:
      return EvalCollection(expr, scope);
    case Expr::Kind::kSlice:
    case Expr::Kind::kNsRef:
      break;
  }
  return Fail(expr.line, absl::InvalidArgumentError("expression not valid here"));
}

Value Renderer::EvalCompare(const Expr& expr, Scope& scope) {
  Value left = Eval(*expr.operands[0], scope);
  for (size_t i = 0; i < expr.compare_ops.size(); ++i) {
    if (failed()) return Value();
    Value right = Eval(*expr.operands[i + 1], scope);
    if (failed()) return Value();
    bool result = false;
    const CompareOp op = expr.compare_ops[i];
    switch (op) {
      case CompareOp::kEq:
        result = PyEquals(left, right);
        break;
      case CompareOp::kNe:
        result = !PyEquals(left, right);
        break;
      case CompareOp::kIn:
      case CompareOp::kNotIn: {
        absl::StatusOr<bool> in = Contains(right, left);
        if (!in.ok()) return Fail(expr.line, in.status());
        result = *in == (op == CompareOp::kIn);
        break;
      }
      default: {
        static constexpr std::string_view kNames[] = {"", "", "<", "<=", ">", ">="};
        const std::string_view name = kNames[static_cast<int>(op)];
        if (left.is_undefined()) return Fail(expr.line, UndefinedError(left));
        if (right.is_undefined()) return Fail(expr.line, UndefinedError(right));
        absl::StatusOr<std::partial_ordering> c = PyCompare(left, right, name);
        if (!c.ok()) return Fail(expr.line, c.status());
        result = op == CompareOp::kLt   ? *c < 0
                 : op == CompareOp::kLe ? *c <= 0
                 : op == CompareOp::kGt ? *c > 0
                                        : *c >= 0;
      }
    }
    if (!result) return Value::Bool(false);
    left = std::move(right);
  }
  return Value::Bool(true);
}

Value Renderer::EvalCollection(const Expr& expr, Scope& scope) {
  if (expr.kind != Expr::Kind::kDict) {
    std::vector<Value> items;
    items.reserve(expr.operands.size());
    for (const ExprPtr& e : expr.operands) {
      items.push_back(Eval(*e, scope));
      if (failed()) return Value();
    }
    absl::StatusOr<Value> v = Value::Array(std::move(items), expr.kind == Expr::Kind::kTuple);
    return v.ok() ? *std::move(v) : Fail(expr.line, v.status());
  }
  std::vector<std::pair<std::string, Value>> items;
  for (size_t i = 0; i + 1 < expr.operands.size(); i += 2) {
    const Value key = Eval(*expr.operands[i], scope);
    Value value = Eval(*expr.operands[i + 1], scope);
    if (failed()) return Value();
    if (!key.is_string()) {
      return Fail(expr.line,
                  absl::InvalidArgumentError(
                      Cat("dict keys must be strings in chat templates, got ", key.TypeName())));
    }
    bool replaced = false;
    for (auto& [k, v] : items) {
      if (k == key.str()) {
        v = value;  // Python keeps the first position and the last value
        replaced = true;
      }
    }
    if (!replaced) items.emplace_back(key.str(), std::move(value));
  }
  absl::StatusOr<Value> v = Value::Object(std::move(items));
  return v.ok() ? *std::move(v) : Fail(expr.line, v.status());
}

bool Renderer::EvalArgs(const ArgList& args, Scope& scope, CallArgs& out, int line) {
  for (const ExprPtr& e : args.positional) {
    out.positional.push_back(Eval(*e, scope));
    if (failed()) return false;
  }
  for (const auto& [key, e] : args.keywords) {
    out.keywords.emplace_back(key, Eval(*e, scope));
    if (failed()) return false;
  }
  if (args.star_args) {
    const Value extra = Eval(*args.star_args, scope);
    if (failed()) return false;
    absl::StatusOr<std::vector<Value>> items = Iterate(extra);
    if (!items.ok()) {
      Fail(line, items.status());
      return false;
    }
    out.positional.insert(out.positional.end(), items->begin(), items->end());
  }
  if (args.star_kwargs) {
    const Value extra = Eval(*args.star_kwargs, scope);
    if (failed()) return false;
    if (!extra.is_object()) {
      Fail(line, absl::InvalidArgumentError("argument after ** must be a mapping"));
      return false;
    }
    for (const auto& item : extra.object().items) out.keywords.push_back(item);
  }
  return true;
}

Value Renderer::EvalFilter(const Expr& expr, Scope& scope, const Value* pipe_input) {
  Value input;
  const Expr* inner = expr.operands[0].get();
  if (inner == nullptr) {
    if (pipe_input != nullptr) input = *pipe_input;
  } else if (inner->kind == Expr::Kind::kFilter) {
    input = EvalFilter(*inner, scope, pipe_input);
  } else {
    input = Eval(*inner, scope);
  }
  CallArgs args;
  if (failed() || !EvalArgs(expr.args, scope, args, expr.line)) return Value();
  absl::StatusOr<Value> r = ApplyFilter(expr.name, input, std::move(args));
  return r.ok() ? *std::move(r) : Fail(expr.line, r.status());
}

}  // namespace moeserve::jinja
