#include "scheduler/chat/value.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "scheduler/chat/callable.h"
#include "scheduler/chat/py_string.h"
#include "scheduler/chat/str_cat.h"

namespace moeserve::jinja {
namespace {

template <typename Items>
const Value* FindIn(const Items& items, std::string_view key) {
  for (const auto& [k, v] : items) {
    if (k == key) return &v;
  }
  return nullptr;
}

absl::Status TooDeep() {
  return absl::InvalidArgumentError(Cat("value nested deeper than ", kMaxValueDepth, " levels"));
}

// Prints repr(v) into out. `open` holds the namespaces being printed, so that
// a namespace that contains itself prints as <Namespace {...}>, as in Python.
void AppendRepr(const Value& v, std::unordered_set<const void*>& open, std::string& out) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return;  // str(Undefined) is ""
    case Value::Kind::kNone:
      out += "None";
      return;
    case Value::Kind::kBool:
      out += v.bool_value() ? "True" : "False";
      return;
    case Value::Kind::kInt:
      out += std::to_string(v.int_value());
      return;
    case Value::Kind::kFloat:
      out += PyFloatRepr(v.float_value());
      return;
    case Value::Kind::kString:
      if (v.is_markup()) out += "Markup(";
      out += PyStringRepr(v.str());
      if (v.is_markup()) out += ")";
      return;
    case Value::Kind::kArray: {
      const ArrayData& a = v.array();
      if (a.dict_view != nullptr) out += std::string(a.dict_view) + "(";
      out += a.is_tuple ? '(' : '[';
      for (size_t i = 0; i < a.items.size(); ++i) {
        if (i > 0) out += ", ";
        AppendRepr(a.items[i], open, out);
      }
      if (a.is_tuple && a.items.size() == 1) out += ',';
      out += a.is_tuple ? ')' : ']';
      if (a.dict_view != nullptr) out += ')';
      return;
    }
    case Value::Kind::kObject: {
      out += '{';
      bool first = true;
      for (const auto& [k, item] : v.object().items) {
        if (!first) out += ", ";
        first = false;
        out += PyStringRepr(k);
        out += ": ";
        AppendRepr(item, open, out);
      }
      out += '}';
      return;
    }
    case Value::Kind::kNamespace: {
      if (!open.insert(v.identity()).second) {
        out += "<Namespace {...}>";
        return;
      }
      out += "<Namespace {";
      bool first = true;
      for (const auto& [k, item] : v.ns().attrs) {
        if (!first) out += ", ";
        first = false;
        out += PyStringRepr(k);
        out += ": ";
        AppendRepr(item, open, out);
      }
      out += "}>";
      open.erase(v.identity());
      return;
    }
    case Value::Kind::kCallable:
      out += v.callable().macro ? Cat("<Macro '", v.callable().name, "'>")
                                : Cat("<function ", v.callable().name, ">");
      return;
  }
}

absl::StatusOr<Value> FromJsonAt(const nlohmann::ordered_json& j, int depth) {
  using Type = nlohmann::ordered_json::value_t;
  if (depth > kMaxValueDepth) return TooDeep();
  switch (j.type()) {
    case Type::null:
    case Type::discarded:
      return Value::None();
    case Type::boolean:
      return Value::Bool(j.get<bool>());
    case Type::number_integer:
      return Value::Int(j.get<int64_t>());
    case Type::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) {
        return absl::InvalidArgumentError(
            Cat("integer ", u, " is too large (the chat template supports 64-bit ints)"));
      }
      return Value::Int(static_cast<int64_t>(u));
    }
    case Type::number_float:
      return Value::Float(j.get<double>());
    case Type::string: {
      const std::string& s = j.get_ref<const std::string&>();
      if (!IsValidUtf8(s)) return absl::InvalidArgumentError("text is not valid UTF-8");
      return Value::String(s);
    }
    case Type::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& item : j) {
        absl::StatusOr<Value> v = FromJsonAt(item, depth + 1);
        if (!v.ok()) return v.status();
        items.push_back(*std::move(v));
      }
      return Value::Array(std::move(items));
    }
    case Type::object: {
      std::vector<std::pair<std::string, Value>> items;
      items.reserve(j.size());
      for (const auto& [key, item] : j.items()) {
        if (!IsValidUtf8(key)) return absl::InvalidArgumentError("key is not valid UTF-8");
        absl::StatusOr<Value> v = FromJsonAt(item, depth + 1);
        if (!v.ok()) return v.status();
        items.emplace_back(key, *std::move(v));
      }
      return Value::Object(std::move(items));
    }
    case Type::binary:
      break;
  }
  return absl::InvalidArgumentError("binary JSON values are not supported");
}

int MaxDepth(const std::vector<Value>& items) {
  int d = 0;
  for (const Value& v : items) d = std::max(d, v.depth());
  return d;
}

}  // namespace

const Value* ObjectData::Find(std::string_view key) const { return FindIn(items, key); }
const Value* NamespaceData::Find(std::string_view key) const { return FindIn(attrs, key); }

void NamespaceData::Set(std::string_view key, Value value) {
  for (auto& [k, v] : attrs) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  attrs.emplace_back(std::string(key), std::move(value));
}

Value Value::Undefined(std::string hint) {
  Value v;
  v.v_ = UndefinedData{std::make_shared<const std::string>(std::move(hint))};
  return v;
}

Value Value::None() {
  Value v;
  v.v_ = std::monostate{};
  return v;
}

Value Value::Bool(bool b) {
  Value v;
  v.v_ = b;
  return v;
}

Value Value::Int(int64_t i) {
  Value v;
  v.v_ = i;
  return v;
}

Value Value::Float(double d) {
  Value v;
  v.v_ = d;
  return v;
}

Value Value::String(std::string s) {
  Value v;
  v.v_ = std::make_shared<const StringData>(StringData{std::move(s), false});
  return v;
}

Value Value::Markup(std::string s) {
  Value v;
  v.v_ = std::make_shared<const StringData>(StringData{std::move(s), true});
  return v;
}

absl::StatusOr<Value> Value::Array(std::vector<Value> items, bool is_tuple) {
  const int depth = MaxDepth(items) + 1;
  if (depth > kMaxValueDepth) return TooDeep();
  Value v;
  v.v_ = std::make_shared<const ArrayData>(ArrayData{std::move(items), is_tuple, depth});
  return v;
}

absl::StatusOr<Value> Value::DictView(std::vector<Value> items, const char* view) {
  absl::StatusOr<Value> v = Array(std::move(items));
  if (!v.ok()) return v;
  auto data = std::make_shared<ArrayData>(v->array());
  data->dict_view = view;
  v->v_ = ArrayPtr(std::move(data));
  return v;
}

absl::StatusOr<Value> Value::Object(std::vector<std::pair<std::string, Value>> items) {
  int depth = 0;
  for (const auto& [k, item] : items) depth = std::max(depth, item.depth());
  if (depth + 1 > kMaxValueDepth) return TooDeep();
  Value v;
  v.v_ = std::make_shared<const ObjectData>(ObjectData{std::move(items), depth + 1});
  return v;
}

Value Value::Namespace(std::shared_ptr<NamespaceData> ns) {
  Value v;
  v.v_ = std::move(ns);
  return v;
}

Value Value::Function(std::shared_ptr<const Callable> fn) {
  Value v;
  v.v_ = std::move(fn);
  return v;
}

absl::StatusOr<Value> Value::FromJson(const nlohmann::ordered_json& json) {
  return FromJsonAt(json, 1);
}

double Value::number_as_double() const {
  return is_float() ? float_value() : static_cast<double>(int_value());
}

const std::string& Value::undefined_hint() const {
  static const std::string* const kEmpty = new std::string();
  const auto& u = std::get<UndefinedData>(v_);
  return u.hint ? *u.hint : *kEmpty;
}

int Value::depth() const {
  if (is_array()) return array().depth;
  if (is_object()) return object().depth;
  return 0;
}

const void* Value::identity() const {
  switch (kind()) {
    case Kind::kString:
      return std::get<StringPtr>(v_).get();
    case Kind::kArray:
      return std::get<ArrayPtr>(v_).get();
    case Kind::kObject:
      return std::get<ObjectPtr>(v_).get();
    case Kind::kNamespace:
      return std::get<NamespacePtr>(v_).get();
    case Kind::kCallable:
      return std::get<CallablePtr>(v_).get();
    default:
      return nullptr;
  }
}

bool Value::Truthy() const {
  switch (kind()) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return bool_value();
    case Kind::kInt:
      return int_value() != 0;
    case Kind::kFloat:
      return float_value() != 0.0;
    case Kind::kString:
      return !str().empty();
    case Kind::kArray:
      return !array().items.empty();
    case Kind::kObject:
      return !object().items.empty();
    case Kind::kNamespace:
    case Kind::kCallable:
      return true;
  }
  return false;
}

std::string Value::TypeName() const {
  switch (kind()) {
    case Kind::kUndefined:
      return "Undefined";
    case Kind::kNone:
      return "NoneType";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kArray:
      if (array().dict_view != nullptr) return array().dict_view;
      return array().is_tuple ? "tuple" : "list";
    case Kind::kObject:
      return "dict";
    case Kind::kNamespace:
      return "Namespace";
    case Kind::kCallable:
      return callable().macro ? "Macro" : "function";
  }
  return "?";
}

std::string ToPyStr(const Value& v) {
  if (v.is_string()) return v.str();
  return ToPyRepr(v);
}

std::string ToPyRepr(const Value& v) {
  std::string out;
  std::unordered_set<const void*> open;
  AppendRepr(v, open, out);
  return out;
}

bool PyEquals(const Value& a, const Value& b) {
  using Kind = Value::Kind;
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.number_as_double() == b.number_as_double();
    return a.int_value() == b.int_value();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Kind::kUndefined:
    case Kind::kNone:
      return true;
    case Kind::kString:
      return a.str() == b.str();
    case Kind::kArray: {
      const ArrayData& x = a.array();
      const ArrayData& y = b.array();
      if (x.is_tuple != y.is_tuple || x.dict_view != y.dict_view ||
          x.items.size() != y.items.size()) {
        return false;
      }
      for (size_t i = 0; i < x.items.size(); ++i) {
        if (!PyEquals(x.items[i], y.items[i])) return false;
      }
      return true;
    }
    case Kind::kObject: {
      const ObjectData& x = a.object();
      const ObjectData& y = b.object();
      if (x.items.size() != y.items.size()) return false;
      for (const auto& [k, item] : x.items) {
        const Value* other = y.Find(k);
        if (other == nullptr || !PyEquals(item, *other)) return false;
      }
      return true;
    }
    default:
      return a.identity() == b.identity();
  }
}

absl::StatusOr<std::partial_ordering> PyCompare(const Value& a, const Value& b,
                                                std::string_view op) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.number_as_double() <=> b.number_as_double();
    return a.int_value() <=> b.int_value();
  }
  if (a.is_string() && b.is_string()) {
    // UTF-8 byte order is code point order.
    return a.str().compare(b.str()) <=> 0;
  }
  if (a.is_array() && b.is_array() && a.array().is_tuple == b.array().is_tuple) {
    const auto& x = a.array().items;
    const auto& y = b.array().items;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (PyEquals(x[i], y[i])) continue;
      return PyCompare(x[i], y[i], op);
    }
    return x.size() <=> y.size();
  }
  return absl::InvalidArgumentError(Cat("'", op, "' not supported between instances of '",
                                        a.TypeName(), "' and '", b.TypeName(), "'"));
}

}  // namespace moeserve::jinja
