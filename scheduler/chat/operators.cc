#include "scheduler/chat/operators.h"

#include <cmath>
#include <string>
#include <utility>

#include "scheduler/chat/builtins.h"
#include "scheduler/chat/py_string.h"
#include "scheduler/chat/str_cat.h"

namespace moeserve::jinja {
namespace {

absl::Status TypeError(std::string message) {
  return absl::InvalidArgumentError(std::move(message));
}

absl::Status Unsupported(std::string_view op, const Value& a, const Value& b) {
  return TypeError(Cat("unsupported operand type(s) for ", op, ": '", a.TypeName(), "' and '",
                       b.TypeName(), "'"));
}

absl::Status TooLong(int64_t max_bytes) {
  return absl::InvalidArgumentError(
      Cat("result would be longer than the limit of ", max_bytes, " bytes"));
}

absl::Status Overflow() { return absl::InvalidArgumentError("integer overflow (beyond 64 bits)"); }

// CPython's float floor division and modulo (float_divmod).
std::pair<double, double> FloatDivMod(double a, double b) {
  double mod = std::fmod(a, b);
  double div = (a - mod) / b;
  if (mod != 0.0) {
    if ((b < 0) != (mod < 0)) {
      mod += b;
      div -= 1.0;
    }
  } else {
    mod = std::copysign(0.0, b);
  }
  double floordiv = 0.0;
  if (div != 0.0) {
    floordiv = std::floor(div);
    if (div - floordiv > 0.5) floordiv += 1.0;
  } else {
    floordiv = std::copysign(0.0, a / b);
  }
  return {floordiv, mod};
}

absl::StatusOr<Value> Repeat(const Value& seq, int64_t times, int64_t max_bytes) {
  if (times < 0) times = 0;
  if (seq.is_string()) {
    const int64_t size = static_cast<int64_t>(seq.str().size());
    if (size > 0 && times > max_bytes / size) return TooLong(max_bytes);
    std::string out;
    out.reserve(static_cast<size_t>(size * times));
    for (int64_t i = 0; i < times; ++i) out += seq.str();
    return seq.is_markup() ? Value::Markup(std::move(out)) : Value::String(std::move(out));
  }
  const auto& items = seq.array().items;
  const int64_t n = static_cast<int64_t>(items.size());
  // Each item costs at least a pointer-sized slot; bound the element count.
  if (n > 0 && times > max_bytes / (n * 16)) return TooLong(max_bytes);
  std::vector<Value> out;
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), items.begin(), items.end());
  return Value::Array(std::move(out), seq.array().is_tuple);
}

absl::StatusOr<Value> Arithmetic(std::string_view op, const Value& a, const Value& b) {
  if (!a.is_number() || !b.is_number()) return Unsupported(op, a, b);
  const bool ints = a.is_integral() && b.is_integral();
  if (op == "/") {
    const double y = b.number_as_double();
    if (y == 0.0) return absl::InvalidArgumentError("division by zero");
    return Value::Float(a.number_as_double() / y);
  }
  if (ints) {
    const int64_t x = a.int_value();
    const int64_t y = b.int_value();
    int64_t r = 0;
    if (op == "+" || op == "-" || op == "*") {
      const bool overflow = op == "+"   ? __builtin_add_overflow(x, y, &r)
                            : op == "-" ? __builtin_sub_overflow(x, y, &r)
                                        : __builtin_mul_overflow(x, y, &r);
      if (overflow) return Overflow();
      return Value::Int(r);
    }
    if (op == "//" || op == "%") {
      if (y == 0) return absl::InvalidArgumentError("integer division or modulo by zero");
      if (x == INT64_MIN && y == -1) {
        if (op == "//") return Overflow();
        return Value::Int(0);
      }
      int64_t q = x / y;
      int64_t m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) {
        m += y;
        q -= 1;
      }
      return Value::Int(op == "//" ? q : m);
    }
    if (op == "**") {
      if (y < 0) {
        if (x == 0) return absl::InvalidArgumentError("0.0 cannot be raised to a negative power");
        return Value::Float(std::pow(static_cast<double>(x), static_cast<double>(y)));
      }
      int64_t result = 1;
      int64_t base = x;
      for (int64_t e = y; e > 0; e >>= 1) {
        if ((e & 1) && __builtin_mul_overflow(result, base, &result)) return Overflow();
        if (e > 1 && __builtin_mul_overflow(base, base, &base)) return Overflow();
      }
      return Value::Int(result);
    }
  }
  const double x = a.number_as_double();
  const double y = b.number_as_double();
  if (op == "+") return Value::Float(x + y);
  if (op == "-") return Value::Float(x - y);
  if (op == "*") return Value::Float(x * y);
  if (op == "**") {
    if (x == 0.0 && y < 0) {
      return absl::InvalidArgumentError("0.0 cannot be raised to a negative power");
    }
    return Value::Float(std::pow(x, y));
  }
  if (y == 0.0) return absl::InvalidArgumentError("float division by zero");
  const auto [div, mod] = FloatDivMod(x, y);
  return Value::Float(op == "//" ? div : mod);
}

Value NoAttribute(const Value& obj, std::string_view name) {
  if (obj.is_none()) return Value::Undefined(Cat("'None' has no attribute '", name, "'"));
  return Value::Undefined(Cat("'", obj.TypeName(), " object' has no attribute '", name, "'"));
}

}  // namespace

absl::Status UndefinedError(const Value& undefined) {
  const std::string& hint = undefined.undefined_hint();
  return absl::InvalidArgumentError(hint.empty() ? "undefined value used" : hint);
}

absl::StatusOr<Value> BinaryOp(std::string_view op, const Value& a, const Value& b,
                               int64_t max_bytes) {
  if (a.is_undefined()) return UndefinedError(a);
  if (b.is_undefined()) return UndefinedError(b);
  if (op == "+") {
    if (a.is_string() || b.is_string()) {
      if (!a.is_string() || !b.is_string()) {
        if (!a.is_string()) return Unsupported(op, a, b);
        return TypeError(Cat("can only concatenate str (not \"", b.TypeName(), "\") to str"));
      }
      if (static_cast<int64_t>(a.str().size() + b.str().size()) > max_bytes) {
        return TooLong(max_bytes);
      }
      if (a.is_markup() || b.is_markup()) {
        // Markup + str escapes the plain side (markupsafe's __add__/__radd__).
        return Value::Markup((a.is_markup() ? a.str() : HtmlEscape(a.str())) +
                             (b.is_markup() ? b.str() : HtmlEscape(b.str())));
      }
      return Value::String(a.str() + b.str());
    }
    if (a.is_array() || b.is_array()) {
      if (!a.is_array() || !b.is_array() || a.array().is_tuple != b.array().is_tuple) {
        if (!a.is_array()) return Unsupported(op, a, b);
        return TypeError(Cat("can only concatenate ", a.TypeName(), " (not \"", b.TypeName(),
                             "\") to ", a.TypeName()));
      }
      std::vector<Value> items = a.array().items;
      items.insert(items.end(), b.array().items.begin(), b.array().items.end());
      return Value::Array(std::move(items), a.array().is_tuple);
    }
  }
  if (op == "*") {
    if ((a.is_string() || a.is_array()) && b.is_integral())
      return Repeat(a, b.int_value(), max_bytes);
    if ((b.is_string() || b.is_array()) && a.is_integral())
      return Repeat(b, a.int_value(), max_bytes);
  }
  if (op == "%" && a.is_string()) {
    return absl::InvalidArgumentError(
        "printf-style string formatting ('...' % values) is not "
        "supported; use ~ or the format method");
  }
  return Arithmetic(op, a, b);
}

absl::StatusOr<Value> UnaryOp(std::string_view op, const Value& v) {
  if (v.is_undefined()) return UndefinedError(v);
  if (v.is_float()) return Value::Float(op == "-" ? -v.float_value() : v.float_value());
  if (v.is_integral()) {
    if (op == "+") return Value::Int(v.int_value());
    if (v.int_value() == INT64_MIN) return Overflow();
    return Value::Int(-v.int_value());
  }
  return TypeError(Cat("bad operand type for unary ", op, ": '", v.TypeName(), "'"));
}

absl::StatusOr<bool> Contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kString:
      if (!item.is_string()) {
        return TypeError(
            Cat("'in <string>' requires string as left operand, not ", item.TypeName()));
      }
      return container.str().find(item.str()) != std::string::npos;
    case Value::Kind::kArray:
      for (const Value& v : container.array().items) {
        if (PyEquals(v, item)) return true;
      }
      return false;
    case Value::Kind::kObject:
      if (item.is_array() && !item.array().is_tuple) return TypeError("unhashable type: 'list'");
      if (item.is_object()) return TypeError("unhashable type: 'dict'");
      return item.is_string() && container.object().Find(item.str()) != nullptr;
    default:
      return TypeError(Cat("argument of type '", container.TypeName(), "' is not iterable"));
  }
}

absl::StatusOr<std::vector<Value>> Iterate(const Value& v) {
  std::vector<Value> out;
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return out;
    case Value::Kind::kArray:
      return v.array().items;
    case Value::Kind::kObject:
      out.reserve(v.object().items.size());
      for (const auto& [key, item] : v.object().items) out.push_back(Value::String(key));
      return out;
    case Value::Kind::kString: {
      const std::string& s = v.str();
      size_t i = 0;
      while (i < s.size()) {
        const size_t start = i;
        DecodeCodePointAt(s, i);
        out.push_back(Value::String(s.substr(start, i - start)));
      }
      return out;
    }
    default:
      return TypeError(Cat("'", v.TypeName(), "' object is not iterable"));
  }
}

absl::StatusOr<Value> GetAttr(const Value& obj, std::string_view name) {
  if (obj.is_undefined()) return UndefinedError(obj);
  if (std::optional<Value> method = FindMethod(obj, name)) return *method;
  if (obj.is_object()) {
    if (const Value* v = obj.object().Find(name)) return *v;
  } else if (obj.is_namespace()) {
    if (const Value* v = obj.ns().Find(name)) return *v;
  }
  return NoAttribute(obj, name);
}

absl::StatusOr<Value> GetItem(const Value& obj, const Value& key) {
  if (obj.is_undefined()) return UndefinedError(obj);
  if (obj.is_object() && key.is_string()) {
    if (const Value* v = obj.object().Find(key.str())) return *v;
  } else if ((obj.is_array() || obj.is_string()) && key.is_integral()) {
    const int64_t n =
        obj.is_array() ? static_cast<int64_t>(obj.array().items.size()) : CodePointCount(obj.str());
    int64_t i = key.int_value();
    if (i < 0) i += n;
    if (i >= 0 && i < n) {
      if (obj.is_array()) return obj.array().items[static_cast<size_t>(i)];
      if (IsAscii(obj.str())) return Value::String(obj.str().substr(static_cast<size_t>(i), 1));
      std::string out;
      AppendUtf8(DecodeUtf8(obj.str())[static_cast<size_t>(i)], out);
      return Value::String(std::move(out));
    }
    return Value::Undefined(Cat(obj.TypeName(), " object has no element ", key.int_value()));
  }
  // Python's obj[key] failed: Jinja falls back to the attribute of that name.
  if (key.is_string()) return GetAttr(obj, key.str());
  return Value::Undefined(Cat(obj.TypeName(), " object has no element ", ToPyRepr(key)));
}

absl::StatusOr<Value> GetSlice(const Value& obj, const Value& start, const Value& stop,
                               const Value& step) {
  if (obj.is_undefined()) return UndefinedError(obj);
  std::optional<int64_t> bounds[3];
  const Value* parts[3] = {&start, &stop, &step};
  for (int k = 0; k < 3; ++k) {
    if (parts[k]->is_integral()) {
      bounds[k] = parts[k]->int_value();
    } else if (!parts[k]->is_none()) {
      return TypeError("slice indices must be integers or None or have an __index__ method");
    }
  }
  if (bounds[2] && *bounds[2] == 0) return absl::InvalidArgumentError("slice step cannot be zero");
  if (obj.is_array()) {
    const auto& items = obj.array().items;
    std::vector<Value> out;
    for (int64_t i :
         SliceIndices(static_cast<int64_t>(items.size()), bounds[0], bounds[1], bounds[2])) {
      out.push_back(items[static_cast<size_t>(i)]);
    }
    return Value::Array(std::move(out), obj.array().is_tuple);
  }
  if (obj.is_string()) {
    const std::u32string cps = DecodeUtf8(obj.str());
    std::u32string out;
    for (int64_t i :
         SliceIndices(static_cast<int64_t>(cps.size()), bounds[0], bounds[1], bounds[2])) {
      out.push_back(cps[static_cast<size_t>(i)]);
    }
    return Value::String(EncodeUtf8(out));
  }
  if (obj.is_object()) return TypeError("unhashable type: 'slice'");
  return TypeError(Cat("'", obj.TypeName(), "' object is not subscriptable"));
}

absl::StatusOr<int64_t> Length(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return 0;
    case Value::Kind::kString:
      return CodePointCount(v.str());
    case Value::Kind::kArray:
      return static_cast<int64_t>(v.array().items.size());
    case Value::Kind::kObject:
      return static_cast<int64_t>(v.object().items.size());
    default:
      return TypeError(Cat("object of type '", v.TypeName(), "' has no len()"));
  }
}

}  // namespace moeserve::jinja
