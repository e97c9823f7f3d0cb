// Renders a parsed template: executes statements and evaluates expressions
// with Jinja2's semantics (scoping of for loops and macros, undefined values,
// Python operators), writing the output text.
#ifndef MOESERVE_SCHEDULER_CHAT_EVALUATOR_H_
#define MOESERVE_SCHEDULER_CHAT_EVALUATOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "scheduler/chat/ast.h"
#include "scheduler/chat/callable.h"
#include "scheduler/chat/value.h"

namespace moeserve::jinja {

struct RenderLimits {
  int64_t max_output_bytes = int64_t{64} << 20;  // output (and any captured block) size
  int max_depth = 500;                           // nested evaluations, macro recursion included
};

// One scope of variables. A for-loop iteration, a macro call and a with block
// each open one whose parent is the enclosing scope (a macro call's is its
// closure, then the template's top scope); `set` writes to the innermost,
// reads walk outwards.
struct Scope {
  explicit Scope(const Scope* parent_scope = nullptr,
                 std::vector<std::pair<std::string, Value>> variables = {})
      : parent(parent_scope), vars(std::move(variables)) {}
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;
  ~Scope() {
    if (alive) *alive = false;
  }

  const Scope* parent;
  std::vector<std::pair<std::string, Value>> vars;
  // Set once a macro closes over this scope; false when the scope ends.
  std::shared_ptr<bool> alive;

  const Value* Lookup(std::string_view name) const;
  void Set(std::string_view name, Value value);
};

// The state of one render. Not thread safe: each Render call creates its own
// Renderer over the shared, immutable tree, which must outlive it.
class Renderer {
 public:
  Renderer(const TemplateAst& ast, RenderLimits limits) : ast_(ast), limits_(limits) {}
  Renderer(const Renderer&) = delete;
  Renderer& operator=(const Renderer&) = delete;

  // Renders the template with `variables` (the caller's kwargs) over the
  // built-in globals. Errors are InvalidArgument "line N: ..."; an error the
  // template raises with raise_exception() is returned as the template wrote
  // it (IsTemplateRaisedError in builtins.h tells it apart).
  absl::StatusOr<std::string> Render(std::vector<std::pair<std::string, Value>> variables);

  // For built-in filters that call back into the template: map, select,
  // reject, selectattr and rejectattr apply other filters and tests, and
  // macros are callables.
  absl::StatusOr<Value> Call(const Value& callee, CallArgs args);
  absl::StatusOr<Value> ApplyFilter(std::string_view name, const Value& input, CallArgs args);
  absl::StatusOr<bool> ApplyTest(std::string_view name, const Value& input, CallArgs args);
  const RenderLimits& limits() const { return limits_; }
  // Namespaces are the only mutable values, hence the only way to build a
  // reference cycle ({% set ns.me = ns %}); the renderer empties every
  // namespace of the render when it ends, so that none leaks.
  void TrackNamespace(std::shared_ptr<NamespaceData> ns) { namespaces_.push_back(std::move(ns)); }

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  // Counts one active Eval/Exec frame; past limits().max_depth the render
  // fails instead of exhausting the stack (a macro that calls itself forever).
  class DepthGuard {
   public:
    DepthGuard(Renderer& r, int line);
    ~DepthGuard() { --r_.depth_; }

   private:
    Renderer& r_;
  };

  bool failed() const { return !error_.ok(); }
  // Records the first error, located at `line`; returns undefined.
  Value Fail(int line, const absl::Status& status);
  void Append(std::string_view text, int line);

  Flow ExecList(const StmtList& body, Scope& scope);
  Flow Exec(const Stmt& stmt, Scope& scope);
  void ExecFor(const Stmt& stmt, Scope& scope);
  Flow ExecIf(const Stmt& stmt, Scope& scope);
  // Renders `body` into a string instead of the output.
  std::string Capture(const StmtList& body, Scope& scope);
  void Assign(const Expr& target, Value value, Scope& scope, int line);

  Value Eval(const Expr& expr, Scope& scope);
  Value EvalCompare(const Expr& expr, Scope& scope);
  Value EvalCollection(const Expr& expr, Scope& scope);
  bool EvalArgs(const ArgList& args, Scope& scope, CallArgs& out, int line);
  // Applies a kFilter chain; a null innermost input takes `pipe_input`.
  Value EvalFilter(const Expr& expr, Scope& scope, const Value* pipe_input);
  absl::StatusOr<Value> CallMacro(const Callable& macro, CallArgs args);
  Value MakeLoop(const std::vector<Value>& items, size_t index);

  const TemplateAst& ast_;
  const RenderLimits limits_;
  absl::Status error_;          // the first error; rendering stops at it
  std::string* out_ = nullptr;  // where output goes: the result or a capture
  Scope* root_ = nullptr;       // the template's top scope, parent of macro scopes
  int depth_ = 0;               // active Eval/Exec/macro frames
  std::vector<std::shared_ptr<NamespaceData>> namespaces_;  // created by this render
};

}  // namespace moeserve::jinja

#endif  // MOESERVE_SCHEDULER_CHAT_EVALUATOR_H_
