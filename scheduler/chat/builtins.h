// Jinja2's built-in filters, tests and globals, the Python methods templates
// call on strings, dicts and lists, and the globals Hugging Face transformers
// adds (raise_exception, strftime_now). Each follows the Python original's
// argument names, defaults and results; anything not listed here is refused
// by name rather than guessed.
#ifndef MOESERVE_SCHEDULER_CHAT_BUILTINS_H_
#define MOESERVE_SCHEDULER_CHAT_BUILTINS_H_

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "scheduler/chat/callable.h"
#include "scheduler/chat/value.h"

namespace moeserve::jinja {

class Renderer;

// value | name(args)
using FilterFn = absl::StatusOr<Value> (*)(const Value& input, CallArgs& args, Renderer& renderer);
// value is name(args)
using TestFn = absl::StatusOr<bool> (*)(const Value& input, CallArgs& args, Renderer& renderer);

// Null when there is no such filter or test.
FilterFn FindFilter(std::string_view name);
TestFn FindTest(std::string_view name);

// The attribute `name` of a str, dict or list when Python has one: a bound
// method (those we do not implement fail when called, naming themselves), or
// undefined for methods that would modify the object, which the immutable
// sandbox forbids. nullopt when the type has no such attribute.
std::optional<Value> FindMethod(const Value& self, std::string_view name);

// range, dict, namespace, raise_exception, strftime_now, and the rest of
// Jinja's globals (lipsum, cycler, joiner) as functions that refuse to run.
std::vector<std::pair<std::string, Value>> BuiltinGlobals();

// loop.cycle of a for loop at iteration index0; loop.changed, which is not
// supported (it needs state across iterations).
Value LoopCycle(int64_t index0);
Value LoopChanged();

// The error raise_exception(message) produces: InvalidArgument with the
// template's message, marked so that IsTemplateRaisedError recognizes it.
absl::Status TemplateRaisedError(std::string_view message);
bool IsTemplateRaisedError(const absl::Status& status);

}  // namespace moeserve::jinja

#endif  // MOESERVE_SCHEDULER_CHAT_BUILTINS_H_
