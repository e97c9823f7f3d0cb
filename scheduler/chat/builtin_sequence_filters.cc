// Jinja2's filters over sequences and mappings: ordering, selection,
// mapping and aggregation (jinja2/filters.py). They return lists where Jinja
// returns generators; templates consume both the same way (join, list, for).
#include <algorithm>
#include <cstdlib>
#include <string>
#include <utility>

#include "scheduler/chat/builtin_filters_internal.h"
#include "scheduler/chat/builtins.h"
#include "scheduler/chat/evaluator.h"
#include "scheduler/chat/operators.h"
#include "scheduler/chat/py_string.h"
#include "scheduler/chat/str_cat.h"

namespace moeserve::jinja::filters {
namespace {

// item.a.b.0 as make_attrgetter walks it: dotted parts, digits as indexes.
absl::StatusOr<Value> LookupPath(Value item, const Value& attribute) {
  if (attribute.is_integral()) return GetItem(item, attribute);
  if (!attribute.is_string()) return GetItem(item, attribute);
  for (const std::string& part : PySplit(attribute.str(), std::string("."), -1)) {
    const bool digits = !part.empty() && std::all_of(part.begin(), part.end(),
                                                     [](char c) { return c >= '0' && c <= '9'; });
    absl::StatusOr<Value> next = GetItem(
        item, digits ? Value::Int(std::strtoll(part.c_str(), nullptr, 10)) : Value::String(part));
    if (!next.ok()) return next.status();
    item = *std::move(next);
  }
  return item;
}

// The key a sort, unique, min or max compares: the attribute, lowercased
// unless case_sensitive (Jinja's ignore_case).
absl::StatusOr<Value> SortKey(const Value& item, const std::optional<Value>& attribute,
                              bool case_sensitive) {
  Value key = item;
  if (attribute && !attribute->is_none()) {
    if (attribute->is_string() && attribute->str().find(',') != std::string::npos) {
      // sort(attribute="age,name"): the key is the list of the attributes.
      std::vector<Value> parts;
      for (const std::string& name : PySplit(attribute->str(), std::string(","), -1)) {
        absl::StatusOr<Value> part = SortKey(item, Value::String(name), case_sensitive);
        if (!part.ok()) return part.status();
        parts.push_back(*std::move(part));
      }
      return Value::Array(std::move(parts));
    }
    absl::StatusOr<Value> k = LookupPath(item, *attribute);
    if (!k.ok()) return k.status();
    key = *std::move(k);
  }
  if (!case_sensitive && key.is_string()) key = Value::String(PyLower(key.str()));
  return key;
}

absl::StatusOr<std::vector<Value>> Keys(const std::vector<Value>& items,
                                        const std::optional<Value>& attribute,
                                        bool case_sensitive) {
  std::vector<Value> keys;
  keys.reserve(items.size());
  for (const Value& item : items) {
    absl::StatusOr<Value> k = SortKey(item, attribute, case_sensitive);
    if (!k.ok()) return k.status();
    keys.push_back(*std::move(k));
  }
  return keys;
}

// Stable order of items by keys, as Python's sorted(..., reverse=...).
absl::StatusOr<std::vector<Value>> SortedBy(const std::vector<Value>& items,
                                            const std::vector<Value>& keys, bool reverse) {
  std::vector<size_t> order(items.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  absl::Status error;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (!error.ok()) return false;
    absl::StatusOr<std::partial_ordering> c =
        reverse ? PyCompare(keys[b], keys[a], "<") : PyCompare(keys[a], keys[b], "<");
    if (!c.ok()) {
      error = c.status();
      return false;
    }
    return *c < 0;
  });
  if (!error.ok()) return error;
  std::vector<Value> out;
  out.reserve(items.size());
  for (size_t i : order) out.push_back(items[i]);
  return out;
}

absl::StatusOr<Value> FirstOrLast(const Value& v, CallArgs& args, bool first) {
  if (absl::StatusOr<Args> a = Bind(first ? "first" : "last", args, {}); !a.ok()) return a.status();
  absl::StatusOr<std::vector<Value>> items = Iterate(v);
  if (!items.ok()) return items.status();
  if (items->empty()) {
    return Value::Undefined(first ? "No first item, sequence was empty."
                                  : "No last item, sequence was empty.");
  }
  return first ? items->front() : items->back();
}

// Keeps the items for which `keep(item)` is true.
template <typename Pred>
absl::StatusOr<Value> Filtered(const Value& v, Pred keep) {
  absl::StatusOr<std::vector<Value>> items = Iterate(v);
  if (!items.ok()) return items.status();
  std::vector<Value> out;
  for (const Value& item : *items) {
    absl::StatusOr<bool> k = keep(item);
    if (!k.ok()) return k.status();
    if (*k) out.push_back(item);
  }
  return Value::Array(std::move(out));
}

// select/reject/selectattr/rejectattr: [attribute,] [test name, test args...].
absl::StatusOr<Value> SelectOrReject(const Value& v, CallArgs& args, Renderer& r, bool lookup_attr,
                                     bool want) {
  CallArgs test_args = args;
  std::optional<Value> attribute;
  if (lookup_attr) {
    if (test_args.positional.empty()) {
      return absl::InvalidArgumentError("selectattr/rejectattr need an attribute name");
    }
    attribute = test_args.positional.front();
    test_args.positional.erase(test_args.positional.begin());
  }
  std::optional<std::string> test;
  if (!test_args.positional.empty()) {
    const Value name = test_args.positional.front();
    if (!name.is_string()) return absl::InvalidArgumentError("the test name must be a string");
    test = name.str();
    test_args.positional.erase(test_args.positional.begin());
  }
  return Filtered(v, [&](const Value& item) -> absl::StatusOr<bool> {
    Value x = item;
    if (attribute) {
      absl::StatusOr<Value> a = LookupPath(item, *attribute);
      if (!a.ok()) return a.status();
      x = *std::move(a);
    }
    if (!test) return x.Truthy() == want;
    absl::StatusOr<bool> passed = r.ApplyTest(*test, x, test_args);
    if (!passed.ok()) return passed.status();
    return *passed == want;
  });
}

absl::StatusOr<Value> MinOrMax(const Value& v, CallArgs& args, bool max) {
  absl::StatusOr<Args> a = Bind(max ? "max" : "min", args, {"case_sensitive", "attribute"});
  if (!a.ok()) return a.status();
  absl::StatusOr<std::vector<Value>> items = Iterate(v);
  if (!items.ok()) return items.status();
  if (items->empty()) return Value::Undefined("No aggregated item, sequence was empty.");
  absl::StatusOr<std::vector<Value>> keys = Keys(*items, (*a)[1], Flag((*a)[0]));
  if (!keys.ok()) return keys.status();
  size_t best = 0;
  for (size_t i = 1; i < items->size(); ++i) {
    absl::StatusOr<std::partial_ordering> c =
        max ? PyCompare((*keys)[i], (*keys)[best], ">") : PyCompare((*keys)[i], (*keys)[best], "<");
    if (!c.ok()) return c.status();
    if (max ? *c > 0 : *c < 0) best = i;
  }
  return (*items)[best];
}

}  // namespace

absl::StatusOr<Args> Bind(std::string_view name, const CallArgs& args,
                          std::initializer_list<std::string_view> params) {
  return BindArgs(Cat("filter '", name, "'"), args, params);
}

absl::StatusOr<Value> DictSort(const Value& v, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind("dictsort", args, {"case_sensitive", "by", "reverse"});
  if (!a.ok()) return a.status();
  if (!v.is_object()) {
    return absl::InvalidArgumentError(Cat("filter 'dictsort' needs a dict, got ", v.TypeName()));
  }
  int pos = 0;
  if ((*a)[1]) {
    const Value& by = *(*a)[1];
    if (!by.is_string() || (by.str() != "key" && by.str() != "value")) {
      return absl::InvalidArgumentError("You can only sort by either \"key\" or \"value\"");
    }
    pos = by.str() == "value" ? 1 : 0;
  }
  std::vector<Value> pairs;
  std::vector<Value> keys;
  for (const auto& [k, item] : v.object().items) {
    absl::StatusOr<Value> pair = Value::Array({Value::String(k), item}, true);
    if (!pair.ok()) return pair.status();
    pairs.push_back(*pair);
    absl::StatusOr<Value> key =
        SortKey(pos == 0 ? Value::String(k) : item, std::nullopt, Flag((*a)[0]));
    if (!key.ok()) return key.status();
    keys.push_back(*std::move(key));
  }
  absl::StatusOr<std::vector<Value>> sorted = SortedBy(pairs, keys, Flag((*a)[2]));
  if (!sorted.ok()) return sorted.status();
  return Value::Array(*std::move(sorted));
}

absl::StatusOr<Value> First(const Value& v, CallArgs& a, Renderer&) {
  return FirstOrLast(v, a, true);
}
absl::StatusOr<Value> Last(const Value& v, CallArgs& a, Renderer&) {
  return FirstOrLast(v, a, false);
}

absl::StatusOr<Value> Items(const Value& v, CallArgs& args, Renderer& r) {
  if (absl::StatusOr<Args> a = Bind("items", args, {}); !a.ok()) return a.status();
  if (v.is_undefined()) return Value::Array({});
  if (!v.is_object()) return absl::InvalidArgumentError("Can only get item pairs from a mapping.");
  return r.Call(*FindMethod(v, "items"), CallArgs());
}

absl::StatusOr<Value> Join(const Value& v, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind("join", args, {"d", "attribute"});
  if (!a.ok()) return a.status();
  absl::StatusOr<std::vector<Value>> items = Iterate(v);
  if (!items.ok()) return items.status();
  const std::string sep = (*a)[0] ? SoftStr(*(*a)[0]) : "";
  std::string out;
  for (size_t i = 0; i < items->size(); ++i) {
    Value item = (*items)[i];
    if ((*a)[1] && !(*a)[1]->is_none()) {
      absl::StatusOr<Value> x = LookupPath(item, *(*a)[1]);
      if (!x.ok()) return x.status();
      item = *std::move(x);
    }
    if (i > 0) out += sep;
    out += SoftStr(item);
  }
  return Value::String(std::move(out));
}

absl::StatusOr<Value> List(const Value& v, CallArgs& args, Renderer&) {
  if (absl::StatusOr<Args> a = Bind("list", args, {}); !a.ok()) return a.status();
  absl::StatusOr<std::vector<Value>> items = Iterate(v);
  if (!items.ok()) return items.status();
  return Value::Array(*std::move(items));
}

absl::StatusOr<Value> Map(const Value& v, CallArgs& args, Renderer& r) {
  absl::StatusOr<std::vector<Value>> items = Iterate(v);
  if (!items.ok()) return items.status();
  std::vector<Value> out;
  if (args.positional.empty()) {
    // map(attribute="x", default=...)
    std::optional<Value> attribute;
    std::optional<Value> dflt;
    for (const auto& [key, value] : args.keywords) {
      if (key == "attribute") {
        attribute = value;
      } else if (key == "default") {
        dflt = value;
      } else {
        return absl::InvalidArgumentError(Cat("Unexpected keyword argument '", key, "'"));
      }
    }
    if (!attribute) return absl::InvalidArgumentError("map requires a filter argument");
    for (const Value& item : *items) {
      absl::StatusOr<Value> x = LookupPath(item, *attribute);
      if (!x.ok()) return x.status();
      out.push_back(x->is_undefined() && dflt && !dflt->is_none() ? *dflt : *std::move(x));
    }
    return Value::Array(std::move(out));
  }
  if (!args.positional.front().is_string()) {
    return absl::InvalidArgumentError("map: the filter name must be a string");
  }
  const std::string name = args.positional.front().str();
  CallArgs filter_args = args;
  filter_args.positional.erase(filter_args.positional.begin());
  for (const Value& item : *items) {
    absl::StatusOr<Value> x = r.ApplyFilter(name, item, filter_args);
    if (!x.ok()) return x.status();
    out.push_back(*std::move(x));
  }
  return Value::Array(std::move(out));
}

absl::StatusOr<Value> Select(const Value& v, CallArgs& args, Renderer& r) {
  return SelectOrReject(v, args, r, false, true);
}
absl::StatusOr<Value> Reject(const Value& v, CallArgs& args, Renderer& r) {
  return SelectOrReject(v, args, r, false, false);
}
absl::StatusOr<Value> SelectAttr(const Value& v, CallArgs& args, Renderer& r) {
  return SelectOrReject(v, args, r, true, true);
}
absl::StatusOr<Value> RejectAttr(const Value& v, CallArgs& args, Renderer& r) {
  return SelectOrReject(v, args, r, true, false);
}
absl::StatusOr<Value> Max(const Value& v, CallArgs& args, Renderer&) {
  return MinOrMax(v, args, true);
}
absl::StatusOr<Value> Min(const Value& v, CallArgs& args, Renderer&) {
  return MinOrMax(v, args, false);
}

absl::StatusOr<Value> Reverse(const Value& v, CallArgs& args, Renderer&) {
  if (absl::StatusOr<Args> a = Bind("reverse", args, {}); !a.ok()) return a.status();
  if (v.is_string()) {
    std::u32string cps = DecodeUtf8(v.str());
    std::reverse(cps.begin(), cps.end());
    return Value::String(EncodeUtf8(cps));
  }
  absl::StatusOr<std::vector<Value>> items = Iterate(v);
  if (!items.ok()) return items.status();
  std::reverse(items->begin(), items->end());
  return Value::Array(*std::move(items));
}

absl::StatusOr<Value> Sort(const Value& v, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind("sort", args, {"reverse", "case_sensitive", "attribute"});
  if (!a.ok()) return a.status();
  absl::StatusOr<std::vector<Value>> items = Iterate(v);
  if (!items.ok()) return items.status();
  absl::StatusOr<std::vector<Value>> keys = Keys(*items, (*a)[2], Flag((*a)[1]));
  if (!keys.ok()) return keys.status();
  absl::StatusOr<std::vector<Value>> sorted = SortedBy(*items, *keys, Flag((*a)[0]));
  if (!sorted.ok()) return sorted.status();
  return Value::Array(*std::move(sorted));
}

absl::StatusOr<Value> Sum(const Value& v, CallArgs& args, Renderer& r) {
  absl::StatusOr<Args> a = Bind("sum", args, {"attribute", "start"});
  if (!a.ok()) return a.status();
  absl::StatusOr<std::vector<Value>> items = Iterate(v);
  if (!items.ok()) return items.status();
  Value total = (*a)[1] ? *(*a)[1] : Value::Int(0);
  if (total.is_string()) {
    return absl::InvalidArgumentError("sum() can't sum strings [use ''.join(seq) instead]");
  }
  for (const Value& item : *items) {
    Value x = item;
    if ((*a)[0] && !(*a)[0]->is_none()) {
      absl::StatusOr<Value> attr = LookupPath(item, *(*a)[0]);
      if (!attr.ok()) return attr.status();
      x = *std::move(attr);
    }
    absl::StatusOr<Value> next = BinaryOp("+", total, x, r.limits().max_output_bytes);
    if (!next.ok()) return next.status();
    total = *std::move(next);
  }
  return total;
}

absl::StatusOr<Value> Unique(const Value& v, CallArgs& args, Renderer&) {
  absl::StatusOr<Args> a = Bind("unique", args, {"case_sensitive", "attribute"});
  if (!a.ok()) return a.status();
  absl::StatusOr<std::vector<Value>> items = Iterate(v);
  if (!items.ok()) return items.status();
  absl::StatusOr<std::vector<Value>> keys = Keys(*items, (*a)[1], Flag((*a)[0]));
  if (!keys.ok()) return keys.status();
  std::vector<Value> out;
  std::vector<Value> seen;
  for (size_t i = 0; i < items->size(); ++i) {
    const Value& key = (*keys)[i];
    if (key.is_array() && !key.array().is_tuple) {
      return absl::InvalidArgumentError("unhashable type: 'list'");
    }
    if (key.is_object()) return absl::InvalidArgumentError("unhashable type: 'dict'");
    if (std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return PyEquals(s, key); })) {
      continue;
    }
    seen.push_back(key);
    out.push_back((*items)[i]);
  }
  return Value::Array(std::move(out));
}

}  // namespace moeserve::jinja::filters
