// Jinja2's built-in tests (jinja2/tests.py): `value is name(args)`.
#include <cmath>
#include <string>

#include "scheduler/chat/builtins.h"
#include "scheduler/chat/evaluator.h"
#include "scheduler/chat/operators.h"
#include "scheduler/chat/py_string.h"
#include "scheduler/chat/str_cat.h"

namespace moeserve::jinja {
namespace {

using Kind = Value::Kind;

// The single argument of a comparison test (`x is eq 3`, `x is divisibleby(3)`).
absl::StatusOr<Value> OneArg(std::string_view test, const CallArgs& args) {
  if (args.positional.size() != 1 || !args.keywords.empty()) {
    return absl::InvalidArgumentError(Cat("test '", test, "' takes one argument"));
  }
  return args.positional[0];
}

absl::Status NoArgs(std::string_view test, const CallArgs& args) {
  if (args.positional.empty() && args.keywords.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(Cat("test '", test, "' takes no arguments"));
}

// Tests of the value's type or definedness: no arguments.
template <bool (*kPredicate)(const Value&)>
absl::StatusOr<bool> KindTest(const Value& v, CallArgs& args, Renderer&) {
  if (!args.positional.empty() || !args.keywords.empty()) {
    return absl::InvalidArgumentError("this test takes no arguments");
  }
  return kPredicate(v);
}

bool IsDefined(const Value& v) { return !v.is_undefined(); }
bool IsUndefined(const Value& v) { return v.is_undefined(); }
bool IsNone(const Value& v) { return v.is_none(); }
bool IsBoolean(const Value& v) { return v.is_bool(); }
bool IsFalse(const Value& v) { return v.is_bool() && !v.bool_value(); }
bool IsTrue(const Value& v) { return v.is_bool() && v.bool_value(); }
bool IsInteger(const Value& v) { return v.is_int(); }
bool IsFloat(const Value& v) { return v.is_float(); }
bool IsNumber(const Value& v) { return v.is_number(); }
bool IsString(const Value& v) { return v.is_string(); }
bool IsMapping(const Value& v) { return v.is_object(); }
bool IsCallable(const Value& v) { return v.is_callable(); }
// iter() and len() work on these (undefined iterates as empty).
bool IsIterable(const Value& v) {
  return v.is_undefined() || v.is_string() || v.is_array() || v.is_object();
}

absl::StatusOr<bool> CaseTest(const Value& v, CallArgs& args, Renderer& r, bool lower) {
  if (absl::Status s = NoArgs(lower ? "lower" : "upper", args); !s.ok()) return s;
  absl::StatusOr<Value> result =
      r.Call(*FindMethod(Value::String(ToPyStr(v)), lower ? "islower" : "isupper"), CallArgs());
  if (!result.ok()) return result.status();
  return result->Truthy();
}
absl::StatusOr<bool> Lower(const Value& v, CallArgs& a, Renderer& r) {
  return CaseTest(v, a, r, true);
}
absl::StatusOr<bool> Upper(const Value& v, CallArgs& a, Renderer& r) {
  return CaseTest(v, a, r, false);
}

absl::StatusOr<bool> Parity(const Value& v, CallArgs& args, bool odd) {
  if (absl::Status s = NoArgs(odd ? "odd" : "even", args); !s.ok()) return s;
  absl::StatusOr<Value> mod = BinaryOp("%", v, Value::Int(2), 0);
  if (!mod.ok()) return mod.status();
  return PyEquals(*mod, Value::Int(odd ? 1 : 0));
}
absl::StatusOr<bool> Odd(const Value& v, CallArgs& a, Renderer&) { return Parity(v, a, true); }
absl::StatusOr<bool> Even(const Value& v, CallArgs& a, Renderer&) { return Parity(v, a, false); }

absl::StatusOr<bool> DivisibleBy(const Value& v, CallArgs& args, Renderer&) {
  absl::StatusOr<Value> n = OneArg("divisibleby", args);
  if (!n.ok()) return n.status();
  absl::StatusOr<Value> mod = BinaryOp("%", v, *n, 0);
  if (!mod.ok()) return mod.status();
  return PyEquals(*mod, Value::Int(0));
}

absl::StatusOr<bool> SameAs(const Value& v, CallArgs& args, Renderer&) {
  absl::StatusOr<Value> other = OneArg("sameas", args);
  if (!other.ok()) return other.status();
  if (v.kind() != other->kind()) return false;
  switch (v.kind()) {
    case Kind::kUndefined:
      return false;
    case Kind::kNone:
    case Kind::kBool:
    case Kind::kInt:
    case Kind::kFloat:
      return PyEquals(v, *other);
    default:
      return v.identity() == other->identity();
  }
}

absl::StatusOr<bool> In(const Value& v, CallArgs& args, Renderer&) {
  absl::StatusOr<Value> seq = OneArg("in", args);
  if (!seq.ok()) return seq.status();
  return Contains(*seq, v);
}

template <int kOp>
absl::StatusOr<bool> Compare(const Value& v, CallArgs& args, Renderer&) {
  static constexpr std::string_view kNames[] = {"==", "!=", "<", "<=", ">", ">="};
  absl::StatusOr<Value> other = OneArg(kNames[kOp], args);
  if (!other.ok()) return other.status();
  if (kOp == 0) return PyEquals(v, *other);
  if (kOp == 1) return !PyEquals(v, *other);
  if (v.is_undefined()) return UndefinedError(v);
  if (other->is_undefined()) return UndefinedError(*other);
  absl::StatusOr<std::partial_ordering> c = PyCompare(v, *other, kNames[kOp]);
  if (!c.ok()) return c.status();
  switch (kOp) {
    case 2:
      return *c < 0;
    case 3:
      return *c <= 0;
    case 4:
      return *c > 0;
    default:
      return *c >= 0;
  }
}

absl::StatusOr<bool> IsFilter(const Value& v, CallArgs& args, Renderer&) {
  if (absl::Status s = NoArgs("filter", args); !s.ok()) return s;
  return v.is_string() && FindFilter(v.str()) != nullptr;
}

absl::StatusOr<bool> IsTest(const Value& v, CallArgs& args, Renderer&) {
  if (absl::Status s = NoArgs("test", args); !s.ok()) return s;
  return v.is_string() && FindTest(v.str()) != nullptr;
}

struct TestEntry {
  std::string_view name;
  TestFn fn;
};

constexpr TestEntry kTests[] = {
    {"defined", KindTest<IsDefined>},
    {"undefined", KindTest<IsUndefined>},
    {"none", KindTest<IsNone>},
    {"boolean", KindTest<IsBoolean>},
    {"false", KindTest<IsFalse>},
    {"true", KindTest<IsTrue>},
    {"integer", KindTest<IsInteger>},
    {"float", KindTest<IsFloat>},
    {"number", KindTest<IsNumber>},
    {"string", KindTest<IsString>},
    {"mapping", KindTest<IsMapping>},
    {"callable", KindTest<IsCallable>},
    {"iterable", KindTest<IsIterable>},
    {"sequence", KindTest<IsIterable>},
    {"lower", Lower},
    {"upper", Upper},
    {"odd", Odd},
    {"even", Even},
    {"divisibleby", DivisibleBy},
    {"sameas", SameAs},
    {"in", In},
    {"eq", Compare<0>},
    {"equalto", Compare<0>},
    {"==", Compare<0>},
    {"ne", Compare<1>},
    {"!=", Compare<1>},
    {"lt", Compare<2>},
    {"lessthan", Compare<2>},
    {"<", Compare<2>},
    {"le", Compare<3>},
    {"<=", Compare<3>},
    {"gt", Compare<4>},
    {"greaterthan", Compare<4>},
    {">", Compare<4>},
    {"ge", Compare<5>},
    {">=", Compare<5>},
    {"filter", IsFilter},
    {"test", IsTest},
};

}  // namespace

TestFn FindTest(std::string_view name) {
  for (const TestEntry& t : kTests) {
    if (t.name == name) return t.fn;
  }
  return nullptr;
}

}  // namespace moeserve::jinja
