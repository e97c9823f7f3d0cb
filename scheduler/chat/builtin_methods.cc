// Python methods of str, dict and list that templates call ("x".split(),
// d.items(), d.get(k)). Only non-mutating methods exist: the sandbox is
// immutable.
#include <memory>
#include <string>
#include <utility>

#include "scheduler/chat/builtins.h"
#include "scheduler/chat/operators.h"
#include "scheduler/chat/py_string.h"
#include "scheduler/chat/str_cat.h"
#include "unicode/uchar.h"

namespace moeserve::jinja {
namespace {

using Args = std::vector<std::optional<Value>>;

absl::StatusOr<Args> Bind(const Callable& fn, const CallArgs& args,
                          std::initializer_list<std::string_view> params, size_t required) {
  absl::StatusOr<Args> bound = BindArgs(fn.name, args, params);
  if (!bound.ok()) return bound.status();
  for (size_t i = 0; i < required; ++i) {
    if (!(*bound)[i]) {
      return absl::InvalidArgumentError(
          Cat(fn.name, ": missing required argument '", *(params.begin() + i), "'"));
    }
  }
  return bound;
}

// An optional str-or-None argument (sep, chars).
absl::StatusOr<std::optional<std::string>> OptionalStr(const Callable& fn, std::string_view what,
                                                       const std::optional<Value>& v) {
  if (!v || v->is_none()) return std::optional<std::string>();
  absl::StatusOr<std::string> s = StrArg(fn.name, what, *v);
  if (!s.ok()) return s.status();
  return std::optional<std::string>(*std::move(s));
}

absl::StatusOr<Value> StringList(std::vector<std::string> parts) {
  std::vector<Value> items;
  items.reserve(parts.size());
  for (std::string& p : parts) items.push_back(Value::String(std::move(p)));
  return Value::Array(std::move(items));
}

absl::StatusOr<Value> Split(const Callable& fn, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind(fn, args, {"sep", "maxsplit"}, 0);
  if (!a.ok()) return a.status();
  absl::StatusOr<std::optional<std::string>> sep = OptionalStr(fn, "sep", (*a)[0]);
  if (!sep.ok()) return sep.status();
  if (*sep && (*sep)->empty()) return absl::InvalidArgumentError("empty separator");
  int64_t maxsplit = -1;
  if ((*a)[1]) {
    absl::StatusOr<int64_t> m = IntArg(fn.name, "maxsplit", *(*a)[1]);
    if (!m.ok()) return m.status();
    maxsplit = *m;
  }
  const bool reverse = fn.name == "str.rsplit";
  return StringList(reverse ? PyRSplit(fn.self.str(), *sep, maxsplit)
                            : PySplit(fn.self.str(), *sep, maxsplit));
}

absl::StatusOr<Value> Strip(const Callable& fn, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind(fn, args, {"chars"}, 0);
  if (!a.ok()) return a.status();
  absl::StatusOr<std::optional<std::string>> chars = OptionalStr(fn, "chars", (*a)[0]);
  if (!chars.ok()) return chars.status();
  const bool left = fn.name != "str.rstrip";
  const bool right = fn.name != "str.lstrip";
  return Value::String(PyStrip(fn.self.str(), *chars, left, right));
}

absl::StatusOr<Value> StartsOrEndsWith(const Callable& fn, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind(fn, args, {"prefix", "start", "end"}, 1);
  if (!a.ok()) return a.status();
  if ((*a)[1] || (*a)[2]) {
    return absl::InvalidArgumentError(Cat(fn.name, "() with start/end is not supported"));
  }
  const Value& p = *(*a)[0];
  std::vector<Value> candidates;
  if (p.is_array() && p.array().is_tuple) {
    candidates = p.array().items;
  } else {
    candidates.push_back(p);
  }
  const std::string& s = fn.self.str();
  const bool ends = fn.name == "str.endswith";
  for (const Value& c : candidates) {
    if (!c.is_string()) {
      return absl::InvalidArgumentError(
          Cat(fn.name, " first arg must be str or a tuple of str, not ", c.TypeName()));
    }
    const std::string& x = c.str();
    if (x.size() <= s.size() && s.compare(ends ? s.size() - x.size() : 0, x.size(), x) == 0) {
      return Value::Bool(true);
    }
  }
  return Value::Bool(false);
}

absl::StatusOr<Value> Replace(const Callable& fn, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind(fn, args, {"old", "new", "count"}, 2);
  if (!a.ok()) return a.status();
  absl::StatusOr<std::string> old_sub = StrArg(fn.name, "old", *(*a)[0]);
  absl::StatusOr<std::string> new_sub = StrArg(fn.name, "new", *(*a)[1]);
  if (!old_sub.ok()) return old_sub.status();
  if (!new_sub.ok()) return new_sub.status();
  int64_t count = -1;
  if ((*a)[2]) {
    absl::StatusOr<int64_t> c = IntArg(fn.name, "count", *(*a)[2]);
    if (!c.ok()) return c.status();
    count = *c;
  }
  return Value::String(PyReplace(fn.self.str(), *old_sub, *new_sub, count));
}

absl::StatusOr<Value> CaseMap(const Callable& fn, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind(fn, args, {}, 0);
  if (!a.ok()) return a.status();
  const std::string& s = fn.self.str();
  if (fn.name == "str.upper") return Value::String(PyUpper(s));
  if (fn.name == "str.lower") return Value::String(PyLower(s));
  if (fn.name == "str.title") return Value::String(PyTitle(s));
  return Value::String(PyCapitalize(s));
}

absl::StatusOr<Value> FindOrCount(const Callable& fn, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind(fn, args, {"sub", "start", "end"}, 1);
  if (!a.ok()) return a.status();
  if ((*a)[1] || (*a)[2]) {
    return absl::InvalidArgumentError(Cat(fn.name, "() with start/end is not supported"));
  }
  absl::StatusOr<std::string> sub = StrArg(fn.name, "sub", *(*a)[0]);
  if (!sub.ok()) return sub.status();
  const std::string& s = fn.self.str();
  if (fn.name == "str.count") return Value::Int(PyCount(s, *sub));
  const bool reverse = fn.name == "str.rfind" || fn.name == "str.rindex";
  const int64_t at = PyFind(s, *sub, reverse);
  if (at < 0 && (fn.name == "str.index" || fn.name == "str.rindex")) {
    return absl::InvalidArgumentError("substring not found");
  }
  return Value::Int(at);
}

absl::StatusOr<Value> Join(const Callable& fn, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind(fn, args, {"iterable"}, 1);
  if (!a.ok()) return a.status();
  absl::StatusOr<std::vector<Value>> items = Iterate(*(*a)[0]);
  if (!items.ok()) return items.status();
  std::string out;
  for (size_t i = 0; i < items->size(); ++i) {
    const Value& item = (*items)[i];
    if (!item.is_string()) {
      return absl::InvalidArgumentError(
          Cat("sequence item ", i, ": expected str instance, ", item.TypeName(), " found"));
    }
    if (i > 0) out += fn.self.str();
    out += item.str();
  }
  return Value::String(std::move(out));
}

absl::StatusOr<Value> SplitLines(const Callable& fn, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind(fn, args, {"keepends"}, 0);
  if (!a.ok()) return a.status();
  return StringList(PySplitLines(fn.self.str(), (*a)[0] && (*a)[0]->Truthy()));
}

absl::StatusOr<Value> RemoveAffix(const Callable& fn, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind(fn, args, {"affix"}, 1);
  if (!a.ok()) return a.status();
  absl::StatusOr<std::string> affix = StrArg(fn.name, "affix", *(*a)[0]);
  if (!affix.ok()) return affix.status();
  std::string s = fn.self.str();
  const bool prefix = fn.name == "str.removeprefix";
  if (affix->size() <= s.size() &&
      s.compare(prefix ? 0 : s.size() - affix->size(), affix->size(), *affix) == 0) {
    s = prefix ? s.substr(affix->size()) : s.substr(0, s.size() - affix->size());
  }
  return Value::String(std::move(s));
}

// str.isalpha() and friends, with Python's Unicode definitions.
absl::StatusOr<Value> IsClass(const Callable& fn, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind(fn, args, {}, 0);
  if (!a.ok()) return a.status();
  const std::u32string cps = DecodeUtf8(fn.self.str());
  const std::string_view m = fn.name;
  if (m == "str.islower" || m == "str.isupper") {
    const bool want_lower = m == "str.islower";
    bool cased = false;
    for (char32_t c : cps) {
      const UChar32 u = static_cast<UChar32>(c);
      const bool upper = u_isUUppercase(u) || u_istitle(u);
      const bool lower = u_isULowercase(u);
      if (want_lower ? upper : (lower || u_istitle(u))) return Value::Bool(false);
      if (want_lower ? lower : upper) cased = true;
    }
    return Value::Bool(cased);
  }
  if (cps.empty()) return Value::Bool(false);
  for (char32_t c : cps) {
    const UChar32 u = static_cast<UChar32>(c);
    const int8_t type = u_charType(u);
    const bool alpha = type == U_UPPERCASE_LETTER || type == U_LOWERCASE_LETTER ||
                       type == U_TITLECASE_LETTER || type == U_MODIFIER_LETTER ||
                       type == U_OTHER_LETTER;
    const int numeric = u_getIntPropertyValue(u, UCHAR_NUMERIC_TYPE);
    const bool decimal = numeric == U_NT_DECIMAL;
    const bool digit = decimal || numeric == U_NT_DIGIT;
    bool ok = false;
    if (m == "str.isalpha") ok = alpha;
    if (m == "str.isdecimal") ok = decimal;
    if (m == "str.isdigit") ok = digit;
    if (m == "str.isnumeric") ok = numeric != U_NT_NONE;
    if (m == "str.isalnum") ok = alpha || numeric != U_NT_NONE;
    if (m == "str.isspace") ok = IsPyWhitespace(c);
    if (!ok) return Value::Bool(false);
  }
  return Value::Bool(true);
}

absl::StatusOr<Value> Justify(const Callable& fn, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind(fn, args, {"width", "fillchar"}, 1);
  if (!a.ok()) return a.status();
  absl::StatusOr<int64_t> width = IntArg(fn.name, "width", *(*a)[0]);
  if (!width.ok()) return width.status();
  std::string fill = " ";
  if ((*a)[1]) {
    absl::StatusOr<std::string> f = StrArg(fn.name, "fillchar", *(*a)[1]);
    if (!f.ok()) return f.status();
    if (CodePointCount(*f) != 1) {
      return absl::InvalidArgumentError("The fill character must be exactly one character long");
    }
    fill = *f;
  }
  const std::string& s = fn.self.str();
  const int64_t len = CodePointCount(s);
  if (*width <= len) return fn.self;
  if (*width > (int64_t{1} << 26)) return absl::InvalidArgumentError("justify width too large");
  const int64_t pad = *width - len;
  int64_t left = 0;
  if (fn.name == "str.center") {
    left = pad / 2 + (pad & *width & 1);
  } else if (fn.name == "str.rjust") {
    left = pad;
  }
  std::string out;
  for (int64_t i = 0; i < left; ++i) out += fill;
  out += s;
  for (int64_t i = left; i < pad; ++i) out += fill;
  return Value::String(std::move(out));
}

// str.format with automatic ({}), numbered ({0}) and named ({name}) fields;
// conversions, format specs and attribute lookups in fields are refused.
absl::StatusOr<Value> Format(const Callable& fn, CallArgs& args, Renderer&) {
  const std::string& f = fn.self.str();
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    const char c = f[i];
    if (c == '}') {
      if (i + 1 < f.size() && f[i + 1] == '}') {
        out += '}';
        ++i;
        continue;
      }
      return absl::InvalidArgumentError("Single '}' encountered in format string");
    }
    if (c != '{') {
      out += c;
      continue;
    }
    if (i + 1 < f.size() && f[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    const size_t close = f.find('}', i);
    if (close == std::string::npos) {
      return absl::InvalidArgumentError("Single '{' encountered in format string");
    }
    const std::string field = f.substr(i + 1, close - i - 1);
    if (field.find_first_of("!:.[{") != std::string::npos) {
      return absl::InvalidArgumentError(
          Cat("str.format field '{", field, "}' is not supported (only {}, {0} and {name})"));
    }
    const Value* value = nullptr;
    if (field.empty() || std::isdigit(static_cast<unsigned char>(field[0]))) {
      const size_t index = field.empty() ? auto_index++ : std::stoul(field);
      if (index < args.positional.size()) value = &args.positional[index];
      if (value == nullptr) {
        return absl::InvalidArgumentError(
            Cat("Replacement index ", index, " out of range for positional args tuple"));
      }
    } else {
      for (const auto& [key, v] : args.keywords) {
        if (key == field) value = &v;
      }
      if (value == nullptr) return absl::InvalidArgumentError(Cat("KeyError: '", field, "'"));
    }
    out += ToPyStr(*value);
    i = close;
  }
  return Value::String(std::move(out));
}

absl::StatusOr<Value> DictItems(const Callable& fn, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind(fn, args, {}, 0);
  if (!a.ok()) return a.status();
  std::vector<Value> out;
  for (const auto& [key, value] : fn.self.object().items) {
    if (fn.name == "dict.keys") {
      out.push_back(Value::String(key));
    } else if (fn.name == "dict.values") {
      out.push_back(value);
    } else {
      absl::StatusOr<Value> pair = Value::Array({Value::String(key), value}, /*is_tuple=*/true);
      if (!pair.ok()) return pair.status();
      out.push_back(*std::move(pair));
    }
  }
  const char* view = fn.name == "dict.keys"     ? "dict_keys"
                     : fn.name == "dict.values" ? "dict_values"
                                                : "dict_items";
  return Value::DictView(std::move(out), view);
}

absl::StatusOr<Value> DictGet(const Callable& fn, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind(fn, args, {"key", "default"}, 1);
  if (!a.ok()) return a.status();
  const Value& key = *(*a)[0];
  if (key.is_string()) {
    if (const Value* v = fn.self.object().Find(key.str())) return *v;
  }
  return (*a)[1] ? *(*a)[1] : Value::None();
}

absl::StatusOr<Value> ListCountOrIndex(const Callable& fn, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind(fn, args, {"value"}, 1);
  if (!a.ok()) return a.status();
  const auto& items = fn.self.array().items;
  int64_t count = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    if (!PyEquals(items[i], *(*a)[0])) continue;
    if (fn.name.ends_with(".index")) return Value::Int(static_cast<int64_t>(i));
    ++count;
  }
  if (fn.name.ends_with(".index")) {
    return absl::InvalidArgumentError(Cat(ToPyRepr(*(*a)[0]), " is not in list"));
  }
  return Value::Int(count);
}

absl::StatusOr<Value> NotSupported(const Callable& fn, CallArgs&, Renderer&) {
  return absl::InvalidArgumentError(
      Cat(fn.name, "() is not supported by the chat template engine"));
}

struct Method {
  std::string_view name;
  BuiltinFn fn;  // NotSupported for Python methods we do not implement
};

constexpr Method kStrMethods[] = {
    {"split", Split},
    {"rsplit", Split},
    {"strip", Strip},
    {"lstrip", Strip},
    {"rstrip", Strip},
    {"startswith", StartsOrEndsWith},
    {"endswith", StartsOrEndsWith},
    {"replace", Replace},
    {"upper", CaseMap},
    {"lower", CaseMap},
    {"title", CaseMap},
    {"capitalize", CaseMap},
    {"find", FindOrCount},
    {"rfind", FindOrCount},
    {"index", FindOrCount},
    {"rindex", FindOrCount},
    {"count", FindOrCount},
    {"join", Join},
    {"splitlines", SplitLines},
    {"removeprefix", RemoveAffix},
    {"removesuffix", RemoveAffix},
    {"isalpha", IsClass},
    {"isdigit", IsClass},
    {"isdecimal", IsClass},
    {"isnumeric", IsClass},
    {"isalnum", IsClass},
    {"isspace", IsClass},
    {"islower", IsClass},
    {"isupper", IsClass},
    {"center", Justify},
    {"ljust", Justify},
    {"rjust", Justify},
    {"format", Format},
    {"casefold", NotSupported},
    {"encode", NotSupported},
    {"expandtabs", NotSupported},
    {"format_map", NotSupported},
    {"isascii", NotSupported},
    {"isidentifier", NotSupported},
    {"isprintable", NotSupported},
    {"istitle", NotSupported},
    {"maketrans", NotSupported},
    {"partition", NotSupported},
    {"rpartition", NotSupported},
    {"swapcase", NotSupported},
    {"translate", NotSupported},
    {"zfill", NotSupported},
};
constexpr Method kDictMethods[] = {
    {"items", DictItems}, {"keys", DictItems},    {"values", DictItems},
    {"get", DictGet},     {"copy", NotSupported}, {"fromkeys", NotSupported},
};
constexpr std::string_view kDictMutators[] = {"clear", "pop", "popitem", "setdefault", "update"};
constexpr Method kListMethods[] = {
    {"count", ListCountOrIndex}, {"index", ListCountOrIndex}, {"copy", NotSupported}};
constexpr std::string_view kListMutators[] = {"append", "clear",  "extend",  "insert",
                                              "pop",    "remove", "reverse", "sort"};

template <size_t N>
const Method* FindIn(const Method (&table)[N], std::string_view name) {
  for (const Method& m : table) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

template <size_t N>
bool Contains(const std::string_view (&names)[N], std::string_view name) {
  for (std::string_view n : names) {
    if (n == name) return true;
  }
  return false;
}

Value Unsafe(const Value& self, std::string_view name) {
  return Value::Undefined(
      Cat("access to attribute '", name, "' of '", self.TypeName(), "' object is unsafe."));
}

}  // namespace

std::optional<Value> FindMethod(const Value& self, std::string_view name) {
  const Method* m = nullptr;
  std::string_view type;
  if (self.is_string()) {
    m = FindIn(kStrMethods, name);
    type = "str";
    if (m != nullptr && self.is_markup()) {
      static constexpr Method kMarkupMethod = {"", NotSupported};
      m = &kMarkupMethod;  // markupsafe escapes the arguments: not reproduced
      type = "Markup";
    }
  } else if (self.is_object()) {
    if (Contains(kDictMutators, name)) return Unsafe(self, name);
    m = FindIn(kDictMethods, name);
    type = "dict";
  } else if (self.is_array()) {
    const bool tuple = self.array().is_tuple;
    if (!tuple && Contains(kListMutators, name)) return Unsafe(self, name);
    m = FindIn(kListMethods, name);
    if (tuple && m != nullptr && name == "copy") m = nullptr;
    type = tuple ? "tuple" : "list";
  }
  if (m == nullptr) {
    if (name.size() > 4 && name.starts_with("__") && name.ends_with("__") && !self.is_undefined()) {
      return Unsafe(self, name);
    }
    return std::nullopt;
  }
  auto fn = std::make_shared<Callable>();
  fn->name = Cat(type, ".", name);
  fn->builtin = m->fn;
  fn->self = self;
  return Value::Function(std::move(fn));
}

}  // namespace moeserve::jinja
