// Jinja2's global functions as the sandbox provides them, and the ones Hugging
// Face transformers adds for chat templates: raise_exception(message) and
// strftime_now(format).
#include <ctime>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/cord.h"
#include "scheduler/chat/builtins.h"
#include "scheduler/chat/evaluator.h"
#include "scheduler/chat/operators.h"
#include "scheduler/chat/str_cat.h"

namespace moeserve::jinja {
namespace {

constexpr std::string_view kRaisedPayload = "moeserve.jinja/raise_exception";
// jinja2.sandbox.MAX_RANGE: ranges longer than this are refused.
constexpr int64_t kMaxRange = 100000;

absl::StatusOr<Value> Range(const Callable& fn, CallArgs& args, Renderer&) {
  if (!args.keywords.empty() || args.positional.empty() || args.positional.size() > 3) {
    return absl::InvalidArgumentError("range() takes 1 to 3 positional integer arguments");
  }
  int64_t bounds[3] = {0, 0, 1};
  for (size_t i = 0; i < args.positional.size(); ++i) {
    absl::StatusOr<int64_t> v = IntArg(fn.name, "argument", args.positional[i]);
    if (!v.ok()) return v.status();
    bounds[args.positional.size() == 1 ? 1 : i] = *v;
  }
  const auto [start, stop, step] = bounds;
  if (step == 0) return absl::InvalidArgumentError("range() arg 3 must not be zero");
  const long double span =
      step > 0 ? static_cast<long double>(stop) - start : static_cast<long double>(start) - stop;
  const long double abs_step = step > 0 ? step : -static_cast<long double>(step);
  const long double length = span <= 0 ? 0 : (span + abs_step - 1) / abs_step;
  if (length > kMaxRange) {
    return absl::InvalidArgumentError(
        Cat("Range too big. The sandbox blocks ranges larger than MAX_RANGE (", kMaxRange, ")."));
  }
  std::vector<Value> items;
  items.reserve(static_cast<size_t>(length));
  for (int64_t i = 0; i < static_cast<int64_t>(length); ++i)
    items.push_back(Value::Int(start + i * step));
  return Value::Array(std::move(items));
}

// dict(mapping, **kwargs) and the attributes of namespace(mapping, **kwargs).
absl::StatusOr<std::vector<std::pair<std::string, Value>>> DictItems(const Callable& fn,
                                                                     const CallArgs& args) {
  std::vector<std::pair<std::string, Value>> items;
  auto put = [&items](const std::string& key, const Value& value) {
    for (auto& [k, v] : items) {
      if (k == key) {
        v = value;
        return;
      }
    }
    items.emplace_back(key, value);
  };
  if (args.positional.size() > 1) {
    return absl::InvalidArgumentError(Cat(fn.name, ": takes at most 1 positional argument"));
  }
  if (!args.positional.empty()) {
    const Value& m = args.positional[0];
    if (m.is_object()) {
      for (const auto& [k, v] : m.object().items) put(k, v);
    } else if (m.is_array()) {
      for (const Value& pair : m.array().items) {
        if (!pair.is_array() || pair.array().items.size() != 2 ||
            !pair.array().items[0].is_string()) {
          return absl::InvalidArgumentError(
              Cat(fn.name, ": expected a mapping or (str, value) pairs"));
        }
        put(pair.array().items[0].str(), pair.array().items[1]);
      }
    } else if (!m.is_undefined()) {
      return absl::InvalidArgumentError(Cat(fn.name, ": expected a mapping, got ", m.TypeName()));
    }
  }
  for (const auto& [k, v] : args.keywords) put(k, v);
  return items;
}

absl::StatusOr<Value> Dict(const Callable& fn, CallArgs& args, Renderer&) {
  absl::StatusOr<std::vector<std::pair<std::string, Value>>> items = DictItems(fn, args);
  if (!items.ok()) return items.status();
  return Value::Object(*std::move(items));
}

absl::StatusOr<Value> Namespace(const Callable& fn, CallArgs& args, Renderer& renderer) {
  absl::StatusOr<std::vector<std::pair<std::string, Value>>> items = DictItems(fn, args);
  if (!items.ok()) return items.status();
  auto ns = std::make_shared<NamespaceData>();
  ns->attrs = *std::move(items);
  renderer.TrackNamespace(ns);
  return Value::Namespace(std::move(ns));
}

absl::StatusOr<Value> RaiseException(const Callable& fn, CallArgs& args, Renderer&) {
  absl::StatusOr<std::vector<std::optional<Value>>> a = BindArgs(fn.name, args, {"message"});
  if (!a.ok()) return a.status();
  if (!(*a)[0]) return absl::InvalidArgumentError("raise_exception() missing argument 'message'");
  return TemplateRaisedError(ToPyStr(*(*a)[0]));
}

absl::StatusOr<Value> StrftimeNow(const Callable& fn, CallArgs& args, Renderer&) {
  absl::StatusOr<std::vector<std::optional<Value>>> a = BindArgs(fn.name, args, {"format"});
  if (!a.ok()) return a.status();
  if (!(*a)[0]) return absl::InvalidArgumentError("strftime_now() missing argument 'format'");
  absl::StatusOr<std::string> format = StrArg(fn.name, "format", *(*a)[0]);
  if (!format.ok()) return format.status();
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::string out(256 + format->size() * 16, '\0');
  const size_t n = std::strftime(out.data(), out.size(), format->c_str(), &local);
  if (n == 0 && !format->empty()) {
    return absl::InvalidArgumentError("strftime_now(): format produces no or too much text");
  }
  out.resize(n);
  return Value::String(std::move(out));
}

absl::StatusOr<Value> LoopCycleFn(const Callable& fn, CallArgs& args, Renderer&) {
  if (args.positional.empty()) return absl::InvalidArgumentError("no items for cycling given");
  const int64_t n = static_cast<int64_t>(args.positional.size());
  return args.positional[static_cast<size_t>(fn.self.int_value() % n)];
}

absl::StatusOr<Value> NotSupported(const Callable& fn, CallArgs&, Renderer&) {
  return absl::InvalidArgumentError(
      Cat(fn.name, "() is not supported by the chat template engine"));
}

Value Function(std::string name, BuiltinFn fn, Value self = Value()) {
  auto c = std::make_shared<Callable>();
  c->name = std::move(name);
  c->builtin = fn;
  c->self = std::move(self);
  return Value::Function(std::move(c));
}

}  // namespace

std::vector<std::pair<std::string, Value>> BuiltinGlobals() {
  std::vector<std::pair<std::string, Value>> globals;
  auto add = [&globals](std::string name, BuiltinFn fn) {
    globals.emplace_back(name, Function(name, fn));
  };
  add("range", Range);
  add("dict", Dict);
  add("namespace", Namespace);
  add("raise_exception", RaiseException);
  add("strftime_now", StrftimeNow);
  add("lipsum", NotSupported);
  add("cycler", NotSupported);
  add("joiner", NotSupported);
  return globals;
}

Value LoopChanged() {
  static const Value* const kChanged = new Value(Function("loop.changed", NotSupported));
  return *kChanged;
}

Value LoopCycle(int64_t index0) { return Function("loop.cycle", LoopCycleFn, Value::Int(index0)); }

absl::Status TemplateRaisedError(std::string_view message) {
  absl::Status status = absl::InvalidArgumentError(ToAbsl(message));
  status.SetPayload(ToAbsl(kRaisedPayload), absl::Cord("1"));
  return status;
}

bool IsTemplateRaisedError(const absl::Status& status) {
  return status.GetPayload(ToAbsl(kRaisedPayload)).has_value();
}

}  // namespace moeserve::jinja
