// Things a template can call: built-in functions and bound methods (a C++
// function plus the receiver), and the template's own macros.
#ifndef MOESERVE_SCHEDULER_CHAT_CALLABLE_H_
#define MOESERVE_SCHEDULER_CHAT_CALLABLE_H_

#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "scheduler/chat/value.h"

namespace moeserve::jinja {

class Renderer;
struct Scope;
struct Stmt;

// Evaluated call arguments: f(a, b, key=c).
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keywords;
};

struct Callable;

// A built-in function; `fn` gives its name and, for a bound method, the
// receiver in fn.self. Errors carry no line; the caller adds it.
using BuiltinFn = absl::StatusOr<Value> (*)(const Callable& fn, CallArgs& args, Renderer& renderer);

struct Callable {
  std::string name;  // as the template spells it, e.g. "str.split", "namespace"
  BuiltinFn builtin = nullptr;
  Value self;  // the receiver of a bound method ("abc" in "abc".split()), else undefined
  const Stmt* macro = nullptr;  // a {% macro %}; the parsed template outlives every render
  // Jinja's closure of a macro defined inside a loop, macro or with block:
  // the enclosing scope while it lasts (the macro sees later assignments
  // there), else a copy of its variables taken at the definition.
  const Scope* closure_scope = nullptr;
  std::shared_ptr<const bool> closure_alive;
  std::vector<std::pair<std::string, Value>> closure_snapshot;
};

// Binds call arguments to parameters as Python does: positional in order,
// then keywords by name. Too many positional arguments, unknown or repeated
// keywords are an error naming `fn`. Each result is unset when not given.
absl::StatusOr<std::vector<std::optional<Value>>> BindArgs(
    std::string_view fn, const CallArgs& args, std::initializer_list<std::string_view> params);

// Typed views of an argument, or a TypeError-like error naming fn and what.
absl::StatusOr<int64_t> IntArg(std::string_view fn, std::string_view what, const Value& v);
absl::StatusOr<std::string> StrArg(std::string_view fn, std::string_view what, const Value& v);

}  // namespace moeserve::jinja

#endif  // MOESERVE_SCHEDULER_CHAT_CALLABLE_H_
