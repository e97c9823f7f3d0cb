// The values a chat template computes with, modelled on the Python objects
// Jinja2 sees: undefined, None, bool, int, float, str, list/tuple, dict (in
// insertion order), namespace() objects and callables. Lists, tuples, dicts
// and strings are immutable once built (the templates run in Jinja's
// ImmutableSandboxedEnvironment) and shared by reference, so copying a Value
// is cheap. Namespaces are the one mutable kind, shared like Python objects.
//
// Thread safety: a Value may be read from many threads; a namespace may be
// written only by the render that created it.
#ifndef MOESERVE_SCHEDULER_CHAT_VALUE_H_
#define MOESERVE_SCHEDULER_CHAT_VALUE_H_

#include <compare>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace moeserve::jinja {

class Value;
struct Callable;

// Containers built deeper than this are refused, so that printing, comparing
// and serializing them cannot exhaust the stack.
inline constexpr int kMaxValueDepth = 256;

struct ArrayData {
  std::vector<Value> items;
  bool is_tuple = false;  // prints as (a, b) and differs from a list in ==
  int depth = 1;          // nesting depth, 1 for a flat list
  // "dict_keys", "dict_values" or "dict_items" for the views dict.keys() and
  // friends return: they print as dict_keys([...]) and are not JSON.
  const char* dict_view = nullptr;
};

struct ObjectData {
  std::vector<std::pair<std::string, Value>> items;  // insertion order, unique keys
  int depth = 1;
  const Value* Find(std::string_view key) const;
};

struct NamespaceData {
  std::vector<std::pair<std::string, Value>> attrs;
  const Value* Find(std::string_view key) const;
  void Set(std::string_view key, Value value);
};

class Value {
 public:
  enum class Kind {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kArray,
    kObject,
    kNamespace,
    kCallable
  };

  // Undefined; `hint` says why, for the error raised when the value is used.
  Value() = default;
  static Value Undefined(std::string hint);
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double d);
  static Value String(std::string s);
  static Value Markup(std::string s);
  // Fails when the items nest deeper than kMaxValueDepth.
  static absl::StatusOr<Value> Array(std::vector<Value> items, bool is_tuple = false);
  // A dict view (keys(), values(), items()); `view` is a string literal.
  static absl::StatusOr<Value> DictView(std::vector<Value> items, const char* view);
  static absl::StatusOr<Value> Object(std::vector<std::pair<std::string, Value>> items);
  static Value Namespace(std::shared_ptr<NamespaceData> ns);
  static Value Function(std::shared_ptr<const Callable> fn);
  // Converts JSON data (conversation, tools, template kwargs). Fails on text
  // that is not UTF-8, integers outside int64, or nesting deeper than
  // kMaxValueDepth.
  static absl::StatusOr<Value> FromJson(const nlohmann::ordered_json& json);

  Kind kind() const { return static_cast<Kind>(v_.index()); }
  bool is_undefined() const { return kind() == Kind::kUndefined; }
  bool is_none() const { return kind() == Kind::kNone; }
  bool is_bool() const { return kind() == Kind::kBool; }
  bool is_int() const { return kind() == Kind::kInt; }
  bool is_float() const { return kind() == Kind::kFloat; }
  bool is_string() const { return kind() == Kind::kString; }
  bool is_array() const { return kind() == Kind::kArray; }
  bool is_object() const { return kind() == Kind::kObject; }
  bool is_namespace() const { return kind() == Kind::kNamespace; }
  bool is_callable() const { return kind() == Kind::kCallable; }
  // int or bool: Python's bool is an int.
  bool is_integral() const { return is_int() || is_bool(); }
  bool is_number() const { return is_integral() || is_float(); }

  // Accessors; the kind must match.
  bool bool_value() const { return std::get<bool>(v_); }
  int64_t int_value() const { return is_bool() ? bool_value() : std::get<int64_t>(v_); }
  double float_value() const { return std::get<double>(v_); }
  double number_as_double() const;
  const std::string& str() const { return std::get<StringPtr>(v_)->text; }
  // A string marked safe (|safe, |escape): markupsafe's Markup. It prints as
  // is, but `+` HTML-escapes a plain string joined to it.
  bool is_markup() const { return is_string() && std::get<StringPtr>(v_)->markup; }
  const ArrayData& array() const { return *std::get<ArrayPtr>(v_); }
  const ObjectData& object() const { return *std::get<ObjectPtr>(v_); }
  NamespaceData& ns() const { return *std::get<NamespacePtr>(v_); }
  const Callable& callable() const { return *std::get<CallablePtr>(v_); }
  const std::string& undefined_hint() const;
  // The container nesting depth (0 for scalars).
  int depth() const;
  // Identity of the referenced object, for `is sameas` and namespaces.
  const void* identity() const;

  // Python truthiness; undefined is false.
  bool Truthy() const;
  // The Python type name used in error messages ("str", "NoneType", ...).
  std::string TypeName() const;

 private:
  struct UndefinedData {
    std::shared_ptr<const std::string> hint;
  };
  struct StringData {
    std::string text;
    bool markup = false;
  };
  using StringPtr = std::shared_ptr<const StringData>;
  using ArrayPtr = std::shared_ptr<const ArrayData>;
  using ObjectPtr = std::shared_ptr<const ObjectData>;
  using NamespacePtr = std::shared_ptr<NamespaceData>;
  using CallablePtr = std::shared_ptr<const Callable>;
  // Alternatives in Kind order.
  std::variant<UndefinedData, std::monostate, bool, int64_t, double, StringPtr, ArrayPtr, ObjectPtr,
               NamespacePtr, CallablePtr>
      v_;
};

// str(value) as Jinja prints it: undefined prints as "", None as "None",
// floats in Python repr, containers as Python reprs.
std::string ToPyStr(const Value& v);
// repr(value).
std::string ToPyRepr(const Value& v);
// Python ==. Numbers compare by value across int/float/bool; lists never
// equal tuples; undefined equals only undefined.
bool PyEquals(const Value& a, const Value& b);
// Python ordering for <, <=, >, >= and sorting (NaN is unordered), or an
// error naming `op` for types Python cannot order ("'<' not supported between
// instances of 'str' and 'int'").
absl::StatusOr<std::partial_ordering> PyCompare(const Value& a, const Value& b,
                                                std::string_view op);

}  // namespace moeserve::jinja

#endif  // MOESERVE_SCHEDULER_CHAT_VALUE_H_
