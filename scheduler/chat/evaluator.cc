#include "scheduler/chat/evaluator.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "scheduler/chat/builtins.h"
#include "scheduler/chat/operators.h"
#include "scheduler/chat/str_cat.h"

namespace moeserve::jinja {

const Value* Scope::Lookup(std::string_view name) const {
  for (const Scope* s = this; s != nullptr; s = s->parent) {
    for (const auto& [key, value] : s->vars) {
      if (key == name) return &value;
    }
  }
  return nullptr;
}

void Scope::Set(std::string_view name, Value value) {
  for (auto& [key, v] : vars) {
    if (key == name) {
      v = std::move(value);
      return;
    }
  }
  vars.emplace_back(std::string(name), std::move(value));
}

Renderer::DepthGuard::DepthGuard(Renderer& r, int line) : r_(r) {
  if (++r_.depth_ > r_.limits_.max_depth) {
    r_.Fail(line, absl::InvalidArgumentError(Cat("template evaluation nested deeper than ",
                                                 r_.limits_.max_depth,
                                                 " levels (runaway macro recursion?)")));
  }
}

absl::StatusOr<std::string> Renderer::Render(std::vector<std::pair<std::string, Value>> variables) {
  Scope builtins;
  builtins.vars = BuiltinGlobals();
  Scope kwargs{&builtins, std::move(variables)};
  Scope top{&kwargs, {}};
  root_ = &top;
  std::string out;
  out_ = &out;
  ExecList(ast_.body, top);
  out_ = nullptr;
  root_ = nullptr;
  for (const auto& ns : namespaces_) ns->attrs.clear();
  namespaces_.clear();
  if (failed()) return error_;
  return out;
}

Value Renderer::Fail(int line, const absl::Status& status) {
  if (!error_.ok()) return Value();
  if (IsTemplateRaisedError(status)) {
    error_ = status;
  } else {
    error_ = absl::InvalidArgumentError(Cat("line ", line, ": ", status.message()));
  }
  return Value();
}

void Renderer::Append(std::string_view text, int line) {
  if (static_cast<int64_t>(out_->size() + text.size()) > limits_.max_output_bytes) {
    Fail(line, absl::InvalidArgumentError(Cat("rendered text longer than the limit of ",
                                              limits_.max_output_bytes, " bytes")));
    return;
  }
  out_->append(text);
}

// ------------------------------------------------------------------ statements

Renderer::Flow Renderer::ExecList(const StmtList& body, Scope& scope) {
  for (const StmtPtr& stmt : body) {
    const Flow flow = Exec(*stmt, scope);
    if (failed()) return Flow::kNormal;
    if (flow != Flow::kNormal) return flow;
  }
  return Flow::kNormal;
}

Renderer::Flow Renderer::Exec(const Stmt& stmt, Scope& scope) {
  DepthGuard guard(*this, stmt.line);
  if (failed()) return Flow::kNormal;
  switch (stmt.kind) {
    case Stmt::Kind::kText:
      Append(stmt.text, stmt.line);
      break;
    case Stmt::Kind::kOutput:
      for (const ExprPtr& e : stmt.exprs) {
        const Value v = Eval(*e, scope);
        if (failed()) break;
        Append(ToPyStr(v), stmt.line);
      }
      break;
    case Stmt::Kind::kIf:
      return ExecIf(stmt, scope);
    case Stmt::Kind::kFor:
      ExecFor(stmt, scope);
      break;
    case Stmt::Kind::kSet: {
      Value v = Eval(*stmt.exprs[0], scope);
      if (!failed()) Assign(*stmt.target, std::move(v), scope, stmt.line);
      break;
    }
    case Stmt::Kind::kSetBlock: {
      Value v = Value::String(Capture(stmt.bodies[0], scope));
      if (stmt.filter && !failed()) v = EvalFilter(*stmt.filter, scope, &v);
      if (!failed()) Assign(*stmt.target, std::move(v), scope, stmt.line);
      break;
    }
    case Stmt::Kind::kMacro: {
      auto macro = std::make_shared<Callable>();
      macro->name = stmt.name;
      macro->macro = &stmt;
      if (&scope != root_) {
        if (!scope.alive) scope.alive = std::make_shared<bool>(true);
        macro->closure_scope = &scope;
        macro->closure_alive = scope.alive;
        for (const Scope* s = &scope; s != nullptr && s != root_; s = s->parent) {
          for (const auto& [name, value] : s->vars) {
            auto& snapshot = macro->closure_snapshot;
            if (std::none_of(snapshot.begin(), snapshot.end(),
                             [&name = name](const auto& v) { return v.first == name; })) {
              snapshot.emplace_back(name, value);
            }
          }
        }
      }
      scope.Set(stmt.name, Value::Function(std::move(macro)));
      break;
    }
    case Stmt::Kind::kFilterBlock: {
      const Value body = Value::String(Capture(stmt.bodies[0], scope));
      if (failed()) break;
      const Value v = EvalFilter(*stmt.filter, scope, &body);
      if (!failed()) Append(ToPyStr(v), stmt.line);
      break;
    }
    case Stmt::Kind::kWith: {
      Scope inner{&scope, {}};
      for (size_t i = 0; i < stmt.targets.size() && !failed(); ++i) {
        Value v = Eval(*stmt.exprs[i], scope);
        if (!failed()) Assign(*stmt.targets[i], std::move(v), inner, stmt.line);
      }
      if (failed()) break;
      return ExecList(stmt.bodies[0], inner);
    }
    case Stmt::Kind::kBreak:
      return Flow::kBreak;
    case Stmt::Kind::kContinue:
      return Flow::kContinue;
    case Stmt::Kind::kGeneration:
      return ExecList(stmt.bodies[0], scope);
  }
  return Flow::kNormal;
}

Renderer::Flow Renderer::ExecIf(const Stmt& stmt, Scope& scope) {
  for (size_t i = 0; i < stmt.exprs.size(); ++i) {
    const Value test = Eval(*stmt.exprs[i], scope);
    if (failed()) return Flow::kNormal;
    if (test.Truthy()) return ExecList(stmt.bodies[i], scope);
  }
  return ExecList(stmt.bodies[stmt.exprs.size()], scope);
}

Value Renderer::MakeLoop(const std::vector<Value>& items, size_t index) {
  const auto n = static_cast<int64_t>(items.size());
  const auto i = static_cast<int64_t>(index);
  absl::StatusOr<Value> loop = Value::Object({
      {"index0", Value::Int(i)},
      {"index", Value::Int(i + 1)},
      {"revindex0", Value::Int(n - i - 1)},
      {"revindex", Value::Int(n - i)},
      {"first", Value::Bool(i == 0)},
      {"last", Value::Bool(i == n - 1)},
      {"length", Value::Int(n)},
      {"depth0", Value::Int(0)},
      {"depth", Value::Int(1)},
      {"previtem", i > 0 ? items[index - 1] : Value::Undefined("there is no previous item")},
      {"nextitem", i + 1 < n ? items[index + 1] : Value::Undefined("there is no next item")},
      {"cycle", LoopCycle(i)},
      {"changed", LoopChanged()},
  });
  // The loop object nests no deeper than the items it holds, which exist.
  return loop.ok() ? *std::move(loop) : Value();
}

void Renderer::ExecFor(const Stmt& stmt, Scope& scope) {
  const Value iterable = Eval(*stmt.exprs[0], scope);
  if (failed()) return;
  absl::StatusOr<std::vector<Value>> all = Iterate(iterable);
  if (!all.ok()) {
    Fail(stmt.line, all.status());
    return;
  }
  std::vector<Value> items;
  if (stmt.exprs.size() > 1) {  // for x in xs if cond: filter before counting
    for (Value& item : *all) {
      Scope probe{&scope, {}};
      Assign(*stmt.target, item, probe, stmt.line);
      const Value keep = failed() ? Value() : Eval(*stmt.exprs[1], probe);
      if (failed()) return;
      if (keep.Truthy()) items.push_back(std::move(item));
    }
  } else {
    items = *std::move(all);
  }
  if (items.empty()) {
    Scope otherwise{&scope, {}};
    ExecList(stmt.bodies[1], otherwise);
    return;
  }
  for (size_t i = 0; i < items.size(); ++i) {
    Scope iteration{&scope, {}};
    Assign(*stmt.target, items[i], iteration, stmt.line);
    iteration.Set("loop", MakeLoop(items, i));
    const Flow flow = failed() ? Flow::kBreak : ExecList(stmt.bodies[0], iteration);
    if (failed() || flow == Flow::kBreak) return;
  }
}

std::string Renderer::Capture(const StmtList& body, Scope& scope) {
  std::string captured;
  std::string* saved = std::exchange(out_, &captured);
  ExecList(body, scope);
  out_ = saved;
  return captured;
}

void Renderer::Assign(const Expr& target, Value value, Scope& scope, int line) {
  switch (target.kind) {
    case Expr::Kind::kName:
      scope.Set(target.name, std::move(value));
      return;
    case Expr::Kind::kNsRef: {
      const Value* ns = scope.Lookup(target.name);
      if (ns == nullptr || !ns->is_namespace()) {
        Fail(line, absl::InvalidArgumentError(
                       Cat("cannot assign attribute on non-namespace object '", target.name, "'")));
        return;
      }
      ns->ns().Set(target.attr, std::move(value));
      return;
    }
    case Expr::Kind::kTuple: {
      absl::StatusOr<std::vector<Value>> items = Iterate(value);
      if (!items.ok()) {
        Fail(line, items.status());
        return;
      }
      const size_t want = target.operands.size();
      if (items->size() != want) {
        Fail(line,
             absl::InvalidArgumentError(
                 items->size() < want ? Cat("not enough values to unpack (expected ", want,
                                            ", got ", items->size(), ")")
                                      : Cat("too many values to unpack (expected ", want, ")")));
        return;
      }
      for (size_t i = 0; i < want; ++i) scope.Set(target.operands[i]->name, (*items)[i]);
      return;
    }
    default:
      Fail(line, absl::InvalidArgumentError("invalid assignment target"));
  }
}

// ------------------------------------------------------------------ calls

absl::StatusOr<Value> Renderer::Call(const Value& callee, CallArgs args) {
  if (failed()) return error_;
  if (callee.is_undefined()) return UndefinedError(callee);
  if (!callee.is_callable()) {
    return absl::InvalidArgumentError(Cat("'", callee.TypeName(), "' object is not callable"));
  }
  const Callable& fn = callee.callable();
  if (fn.macro != nullptr) return CallMacro(fn, std::move(args));
  return fn.builtin(fn, args, *this);
}

absl::StatusOr<Value> Renderer::ApplyFilter(std::string_view name, const Value& input,
                                            CallArgs args) {
  if (failed()) return error_;
  const FilterFn fn = FindFilter(name);
  if (fn == nullptr) return absl::InvalidArgumentError(Cat("no filter named '", name, "'"));
  return fn(input, args, *this);
}

absl::StatusOr<bool> Renderer::ApplyTest(std::string_view name, const Value& input, CallArgs args) {
  if (failed()) return error_;
  const TestFn fn = FindTest(name);
  if (fn == nullptr) return absl::InvalidArgumentError(Cat("no test named '", name, "'"));
  return fn(input, args, *this);
}

absl::StatusOr<Value> Renderer::CallMacro(const Callable& macro, CallArgs args) {
  const Stmt& m = *macro.macro;
  Scope snapshot{root_, {}};
  const Scope* parent = root_;
  if (macro.closure_scope != nullptr && *macro.closure_alive) {
    parent = macro.closure_scope;
  } else if (macro.closure_scope != nullptr) {
    snapshot.vars = macro.closure_snapshot;  // the macro outlived its scope
    parent = &snapshot;
  }
  Scope scope{parent, {}};
  const size_t n = m.params.size();
  std::vector<std::optional<Value>> bound(n);
  std::vector<Value> extra_positional;
  for (size_t i = 0; i < args.positional.size(); ++i) {
    if (i < n) {
      bound[i] = std::move(args.positional[i]);
    } else {
      extra_positional.push_back(std::move(args.positional[i]));
    }
  }
  std::vector<std::pair<std::string, Value>> extra_keywords;
  for (auto& [key, value] : args.keywords) {
    size_t i = 0;
    while (i < n && m.params[i] != key) ++i;
    if (i == n) {
      extra_keywords.emplace_back(key, std::move(value));
    } else if (bound[i]) {
      return absl::InvalidArgumentError(
          Cat("macro '", m.name, "' got multiple values for argument '", key, "'"));
    } else {
      bound[i] = std::move(value);
    }
  }
  if (!extra_positional.empty() && !m.catches_varargs) {
    return absl::InvalidArgumentError(
        Cat("macro '", m.name, "' takes not more than ", n, " argument(s)"));
  }
  if (!extra_keywords.empty() && !m.catches_kwargs) {
    return absl::InvalidArgumentError(
        Cat("macro '", m.name, "' takes no keyword argument '", extra_keywords.front().first, "'"));
  }
  for (size_t i = 0; i < n; ++i) {
    if (!bound[i] && m.defaults[i]) {
      bound[i] = Eval(*m.defaults[i], scope);  // defaults see the earlier parameters
      if (failed()) return error_;
    }
    scope.Set(m.params[i],
              bound[i] ? *std::move(bound[i])
                       : Value::Undefined(Cat("parameter '", m.params[i], "' was not provided")));
  }
  absl::StatusOr<Value> varargs = Value::Array(std::move(extra_positional), /*is_tuple=*/true);
  absl::StatusOr<Value> kwargs = Value::Object(std::move(extra_keywords));
  if (!varargs.ok()) return varargs.status();
  if (!kwargs.ok()) return kwargs.status();
  scope.Set("varargs", *std::move(varargs));
  scope.Set("kwargs", *std::move(kwargs));
  std::string text = Capture(m.bodies[0], scope);
  if (failed()) return error_;
  return Value::String(std::move(text));
}

}  // namespace moeserve::jinja
