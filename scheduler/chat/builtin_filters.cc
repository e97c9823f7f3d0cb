// Jinja2's built-in filters (jinja2/filters.py) and the `tojson` filter of
// Hugging Face transformers, which replaces Jinja's: json.dumps with
// ensure_ascii=False and no HTML escaping.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

#include "scheduler/chat/builtin_filters_internal.h"
#include "scheduler/chat/builtins.h"
#include "scheduler/chat/evaluator.h"
#include "scheduler/chat/operators.h"
#include "scheduler/chat/py_json.h"
#include "scheduler/chat/py_string.h"
#include "scheduler/chat/str_cat.h"

namespace moeserve::jinja::filters {
namespace {

absl::StatusOr<Value> Abs(const Value& v, CallArgs& args, Renderer&) {
  if (absl::StatusOr<Args> a = Bind("abs", args, {}); !a.ok()) return a.status();
  if (v.is_float()) return Value::Float(std::fabs(v.float_value()));
  if (v.is_integral()) {
    if (v.int_value() == INT64_MIN) return absl::InvalidArgumentError("integer overflow");
    return Value::Int(std::llabs(v.int_value()));
  }
  return absl::InvalidArgumentError(Cat("bad operand type for abs(): '", v.TypeName(), "'"));
}

absl::StatusOr<Value> Attr(const Value& v, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind("attr", args, {"name"});
  if (!a.ok()) return a.status();
  if (!(*a)[0]) return absl::InvalidArgumentError("filter 'attr' needs an attribute name");
  absl::StatusOr<std::string> name = StrArg("attr", "name", *(*a)[0]);
  if (!name.ok()) return name.status();
  if (v.is_undefined()) return UndefinedError(v);
  // Attributes only, never items: a dict's keys are not its attributes.
  if (std::optional<Value> m = FindMethod(v, *name)) return *m;
  if (v.is_namespace()) {
    if (const Value* x = v.ns().Find(*name)) return *x;
  }
  return Value::Undefined(Cat("'", v.TypeName(), " object' has no attribute '", *name, "'"));
}

absl::StatusOr<Value> StrFilter(const Value& v, CallArgs& args, Renderer&, std::string_view name) {
  if (absl::StatusOr<Args> a = Bind(name, args, {}); !a.ok()) return a.status();
  const std::string s = SoftStr(v);
  // Markup methods return Markup: keep the mark where Jinja keeps it.
  auto same_kind = [&v](std::string text) {
    return v.is_markup() ? Value::Markup(std::move(text)) : Value::String(std::move(text));
  };
  if (name == "upper") return same_kind(PyUpper(s));
  if (name == "lower") return same_kind(PyLower(s));
  if (name == "capitalize") return same_kind(PyCapitalize(s));
  if (name == "string") return same_kind(s);
  // title: Jinja's own rule, words start after -, whitespace and ({[<.
  std::string out;
  bool word_start = true;
  size_t i = 0;
  while (i < s.size()) {
    const size_t start = i;
    const char32_t cp = DecodeCodePointAt(s, i);
    const bool boundary =
        cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || IsPyWhitespace(cp);
    const std::string_view ch(s.data() + start, i - start);
    if (boundary) {
      out += ch;
      word_start = true;
    } else {
      out += word_start ? PyUpper(ch) : PyLower(ch);
      word_start = false;
    }
  }
  return Value::String(std::move(out));
}

absl::StatusOr<Value> Upper(const Value& v, CallArgs& a, Renderer& r) {
  return StrFilter(v, a, r, "upper");
}
absl::StatusOr<Value> Lower(const Value& v, CallArgs& a, Renderer& r) {
  return StrFilter(v, a, r, "lower");
}
absl::StatusOr<Value> Capitalize(const Value& v, CallArgs& a, Renderer& r) {
  return StrFilter(v, a, r, "capitalize");
}
absl::StatusOr<Value> Title(const Value& v, CallArgs& a, Renderer& r) {
  return StrFilter(v, a, r, "title");
}
absl::StatusOr<Value> String(const Value& v, CallArgs& a, Renderer& r) {
  return StrFilter(v, a, r, "string");
}

absl::StatusOr<Value> Center(const Value& v, CallArgs& args, Renderer& r) {
  absl::StatusOr<Args> a = Bind("center", args, {"width"});
  if (!a.ok()) return a.status();
  CallArgs margs;
  margs.positional.push_back((*a)[0] ? *(*a)[0] : Value::Int(80));
  return r.Call(*FindMethod(Value::String(SoftStr(v)), "center"), std::move(margs));
}

absl::StatusOr<Value> Length(const Value& v, CallArgs& args, Renderer&) {
  if (absl::StatusOr<Args> a = Bind("length", args, {}); !a.ok()) return a.status();
  absl::StatusOr<int64_t> n = jinja::Length(v);
  if (!n.ok()) return n.status();
  return Value::Int(*n);
}

absl::StatusOr<Value> Default(const Value& v, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind("default", args, {"default_value", "boolean"});
  if (!a.ok()) return a.status();
  if (v.is_undefined() || (Flag((*a)[1]) && !v.Truthy())) {
    return (*a)[0] ? *(*a)[0] : Value::String("");
  }
  return v;
}

absl::StatusOr<Value> Indent(const Value& v, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind("indent", args, {"width", "first", "blank"});
  if (!a.ok()) return a.status();
  std::string indention(4, ' ');
  if ((*a)[0]) {
    const Value& w = *(*a)[0];
    if (w.is_string()) {
      indention = w.str();
    } else {
      absl::StatusOr<int64_t> n = IntArg("indent", "width", w);
      if (!n.ok()) return n.status();
      indention = std::string(static_cast<size_t>(std::clamp<int64_t>(*n, 0, 4096)), ' ');
    }
  }
  const std::vector<std::string> lines = PySplitLines(SoftStr(v) + "\n", false);
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i > 0) out += '\n';
    const bool indent_line = i > 0 && (Flag((*a)[2]) || !lines[i].empty());
    if (indent_line) out += indention;
    out += lines[i];
  }
  if (Flag((*a)[1])) out = indention + out;
  return Value::String(std::move(out));
}

// int("42"), int(" -1_000 "), int("0x1f", 16): Python's int() of a string.
std::optional<int64_t> ParsePyInt(std::string_view text, int base) {
  std::string s = PyStrip(text, std::nullopt, true, true);
  bool negative = false;
  size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) negative = s[i++] == '-';
  if (i + 1 < s.size() && s[i] == '0') {
    const char p = static_cast<char>(std::tolower(static_cast<unsigned char>(s[i + 1])));
    const int prefixed = p == 'x' ? 16 : p == 'o' ? 8 : p == 'b' ? 2 : 0;
    if (prefixed != 0 && (base == prefixed || base == 0)) {
      base = prefixed;
      i += 2;
      if (i < s.size() && s[i] == '_') ++i;
    }
  }
  if (base == 0) base = 10;
  std::string digits;
  for (; i < s.size(); ++i) {
    if (s[i] == '_' && !digits.empty() && i + 1 < s.size() && s[i + 1] != '_') continue;
    digits += s[i];
  }
  if (digits.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(digits.c_str(), &end, base);
  if (errno != 0 || *end != '\0' || digits[0] == '+' || digits[0] == '-') return std::nullopt;
  return negative ? -v : v;
}

// float("1.5"), float(" inf "): Python's float() of a string.
std::optional<double> ParsePyFloat(std::string_view text) {
  std::string s = PyStrip(text, std::nullopt, true, true);
  if (s.empty() || s.find_first_not_of("0123456789+-.eEinfatyINFATY_") != std::string::npos) {
    return std::nullopt;
  }
  std::string clean;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '_') {
      if (i == 0 || i + 1 == s.size() || !std::isdigit(static_cast<unsigned char>(s[i - 1])) ||
          !std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
        return std::nullopt;
      }
      continue;
    }
    clean += s[i];
  }
  char* end = nullptr;
  const double v = std::strtod(clean.c_str(), &end);
  if (*end != '\0') return std::nullopt;
  return v;
}

absl::StatusOr<Value> Int(const Value& v, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind("int", args, {"default", "base"});
  if (!a.ok()) return a.status();
  const Value dflt = (*a)[0] ? *(*a)[0] : Value::Int(0);
  if (v.is_undefined()) return UndefinedError(v);
  if (v.is_integral()) return Value::Int(v.int_value());
  if (v.is_float()) {
    const double d = v.float_value();
    if (std::isnan(d)) return dflt;
    if (std::isinf(d))
      return absl::InvalidArgumentError("cannot convert float infinity to integer");
    if (std::fabs(d) >= 9.2e18) return absl::InvalidArgumentError("integer overflow");
    return Value::Int(static_cast<int64_t>(d));
  }
  if (v.is_string()) {
    int base = 10;
    if ((*a)[1]) {
      absl::StatusOr<int64_t> b = IntArg("int", "base", *(*a)[1]);
      if (!b.ok()) return b.status();
      base = static_cast<int>(*b);
    }
    if (std::optional<int64_t> i = ParsePyInt(v.str(), base)) return Value::Int(*i);
    if (std::optional<double> d = ParsePyFloat(v.str())) {
      if (std::isfinite(*d) && std::fabs(*d) < 9.2e18) return Value::Int(static_cast<int64_t>(*d));
    }
  }
  return dflt;
}

absl::StatusOr<Value> Float(const Value& v, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind("float", args, {"default"});
  if (!a.ok()) return a.status();
  if (v.is_undefined()) return UndefinedError(v);
  if (v.is_number()) return Value::Float(v.number_as_double());
  if (v.is_string()) {
    if (std::optional<double> d = ParsePyFloat(v.str())) return Value::Float(*d);
  }
  return (*a)[0] ? *(*a)[0] : Value::Float(0.0);
}

absl::StatusOr<Value> Replace(const Value& v, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind("replace", args, {"old", "new", "count"});
  if (!a.ok()) return a.status();
  if (!(*a)[0] || !(*a)[1]) return absl::InvalidArgumentError("filter 'replace' needs old and new");
  int64_t count = -1;
  if ((*a)[2] && !(*a)[2]->is_none()) {
    absl::StatusOr<int64_t> c = IntArg("replace", "count", *(*a)[2]);
    if (!c.ok()) return c.status();
    count = *c;
  }
  return Value::String(PyReplace(SoftStr(v), SoftStr(*(*a)[0]), SoftStr(*(*a)[1]), count));
}

// round(x, n) for a float: correctly rounded to n decimals, ties to even on
// the exact binary value, as CPython does.
double PyRoundFloat(double x, int64_t ndigits) {
  if (!std::isfinite(x) || ndigits > 300) return x;
  if (ndigits >= 0) {
    char buf[512];
    std::snprintf(buf, sizeof(buf), "%.*f", static_cast<int>(ndigits), x);
    return std::strtod(buf, nullptr);
  }
  const double scale = std::pow(10.0, static_cast<double>(-ndigits));
  return std::nearbyint(x / scale) * scale;
}

absl::StatusOr<Value> Round(const Value& v, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind("round", args, {"precision", "method"});
  if (!a.ok()) return a.status();
  int64_t precision = 0;
  if ((*a)[0]) {
    absl::StatusOr<int64_t> p = IntArg("round", "precision", *(*a)[0]);
    if (!p.ok()) return p.status();
    precision = *p;
  }
  std::string method = "common";
  if ((*a)[1]) method = SoftStr(*(*a)[1]);
  if (method != "common" && method != "ceil" && method != "floor") {
    return absl::InvalidArgumentError("method must be common, ceil or floor");
  }
  if (v.is_undefined()) return UndefinedError(v);
  if (!v.is_number()) {
    return absl::InvalidArgumentError(
        Cat("type ", v.TypeName(), " doesn't define __round__ method"));
  }
  if (method == "common") {
    if (v.is_integral() && precision >= 0) return Value::Int(v.int_value());
    return Value::Float(PyRoundFloat(v.number_as_double(), precision));
  }
  const double scale = std::pow(10.0, static_cast<double>(precision));
  const double scaled = v.number_as_double() * scale;
  return Value::Float((method == "ceil" ? std::ceil(scaled) : std::floor(scaled)) / scale);
}

// transformers: json.dumps(x, ensure_ascii=False, indent=None,
// separators=None, sort_keys=False).
absl::StatusOr<Value> ToJson(const Value& v, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a =
      Bind("tojson", args, {"ensure_ascii", "indent", "separators", "sort_keys"});
  if (!a.ok()) return a.status();
  PyJsonOptions options;
  options.ensure_ascii = Flag((*a)[0]);
  options.sort_keys = Flag((*a)[3]);
  if ((*a)[1] && !(*a)[1]->is_none()) {
    const Value& indent = *(*a)[1];
    if (indent.is_string()) {
      options.indent = indent.str();
    } else {
      absl::StatusOr<int64_t> n = IntArg("tojson", "indent", indent);
      if (!n.ok()) return n.status();
      options.indent = std::string(static_cast<size_t>(std::clamp<int64_t>(*n, 0, 4096)), ' ');
    }
    options.item_separator.assign(1, ',');  // not = ",": GCC 12 -Wrestrict false positive
  }
  if ((*a)[2] && !(*a)[2]->is_none()) {
    const Value& sep = *(*a)[2];
    if (!sep.is_array() || sep.array().items.size() != 2 || !sep.array().items[0].is_string() ||
        !sep.array().items[1].is_string()) {
      return absl::InvalidArgumentError("tojson: separators must be a pair of strings");
    }
    options.item_separator = sep.array().items[0].str();
    options.key_separator = sep.array().items[1].str();
  }
  std::string out;
  if (absl::Status s = AppendPyJson(v, options, out); !s.ok()) return s;
  return Value::String(std::move(out));
}

absl::StatusOr<Value> Trim(const Value& v, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind("trim", args, {"chars"});
  if (!a.ok()) return a.status();
  std::optional<std::string> chars;
  if ((*a)[0] && !(*a)[0]->is_none()) {
    absl::StatusOr<std::string> c = StrArg("trim", "chars", *(*a)[0]);
    if (!c.ok()) return c.status();
    chars = *std::move(c);
  }
  std::string text = PyStrip(SoftStr(v), chars, true, true);
  return v.is_markup() ? Value::Markup(std::move(text)) : Value::String(std::move(text));
}

// |safe marks a string safe (markupsafe.Markup); |escape HTML-escapes what is
// not marked yet, |forceescape even what is.
absl::StatusOr<Value> Safe(const Value& v, CallArgs& args, Renderer&) {
  if (absl::StatusOr<Args> a = Bind("safe", args, {}); !a.ok()) return a.status();
  return v.is_markup() ? v : Value::Markup(SoftStr(v));
}

absl::StatusOr<Value> Escape(const Value& v, CallArgs& args, Renderer&) {
  if (absl::StatusOr<Args> a = Bind("escape", args, {}); !a.ok()) return a.status();
  return v.is_markup() ? v : Value::Markup(HtmlEscape(SoftStr(v)));
}

absl::StatusOr<Value> ForceEscape(const Value& v, CallArgs& args, Renderer&) {
  if (absl::StatusOr<Args> a = Bind("forceescape", args, {}); !a.ok()) return a.status();
  return Value::Markup(HtmlEscape(SoftStr(v)));
}

struct FilterEntry {
  std::string_view name;
  FilterFn fn;
};

constexpr FilterEntry kFilters[] = {
    {"abs", Abs},
    {"attr", Attr},
    {"capitalize", Capitalize},
    {"center", Center},
    {"count", Length},
    {"d", Default},
    {"e", Escape},
    {"escape", Escape},
    {"forceescape", ForceEscape},
    {"safe", Safe},
    {"default", Default},
    {"dictsort", DictSort},
    {"first", First},
    {"float", Float},
    {"indent", Indent},
    {"int", Int},
    {"items", Items},
    {"join", Join},
    {"last", Last},
    {"length", Length},
    {"list", List},
    {"lower", Lower},
    {"map", Map},
    {"max", Max},
    {"min", Min},
    {"reject", Reject},
    {"rejectattr", RejectAttr},
    {"replace", Replace},
    {"reverse", Reverse},
    {"round", Round},
    {"select", Select},
    {"selectattr", SelectAttr},
    {"sort", Sort},
    {"string", String},
    {"sum", Sum},
    {"title", Title},
    {"tojson", ToJson},
    {"trim", Trim},
    {"unique", Unique},
    {"upper", Upper},
};

}  // namespace
}  // namespace moeserve::jinja::filters

namespace moeserve::jinja {

FilterFn FindFilter(std::string_view name) {
  for (const filters::FilterEntry& f : filters::kFilters) {
    if (f.name == name) return f.fn;
  }
  return nullptr;
}

}  // namespace moeserve::jinja
