#include "scheduler/chat/py_json.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "scheduler/chat/py_string.h"
#include "scheduler/chat/str_cat.h"

namespace moeserve::jinja {
namespace {

void AppendJsonString(std::string_view s, bool ensure_ascii, std::string& out) {
  out.push_back('"');
  const std::u32string cps = DecodeUtf8(s);
  for (char32_t cp : cps) {
    switch (cp) {
      case '"':
        out += "\\\"";
        continue;
      case '\\':
        out += "\\\\";
        continue;
      case '\n':
        out += "\\n";
        continue;
      case '\r':
        out += "\\r";
        continue;
      case '\t':
        out += "\\t";
        continue;
      case '\b':
        out += "\\b";
        continue;
      case '\f':
        out += "\\f";
        continue;
      default:
        break;
    }
    char buf[16];
    if (cp < 0x20 || (ensure_ascii && cp >= 0x7F)) {
      if (cp >= 0x10000) {
        const char32_t v = cp - 0x10000;
        std::snprintf(buf, sizeof(buf), "\\u%04x\\u%04x", static_cast<unsigned>(0xD800 + (v >> 10)),
                      static_cast<unsigned>(0xDC00 + (v & 0x3FF)));
      } else {
        std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(cp));
      }
      out += buf;
    } else {
      AppendUtf8(cp, out);
    }
  }
  out.push_back('"');
}

void Newline(const PyJsonOptions& o, int level, std::string& out) {
  out.push_back('\n');
  for (int i = 0; i < level; ++i) out += *o.indent;
}

absl::Status Append(const Value& v, const PyJsonOptions& o, int level, std::string& out) {
  switch (v.kind()) {
    case Value::Kind::kNone:
      out += "null";
      return absl::OkStatus();
    case Value::Kind::kBool:
      out += v.bool_value() ? "true" : "false";
      return absl::OkStatus();
    case Value::Kind::kInt:
      out += std::to_string(v.int_value());
      return absl::OkStatus();
    case Value::Kind::kFloat: {
      const double d = v.float_value();
      if (std::isnan(d)) {
        out += "NaN";
      } else if (std::isinf(d)) {
        out += d > 0 ? "Infinity" : "-Infinity";
      } else {
        out += PyFloatRepr(d);
      }
      return absl::OkStatus();
    }
    case Value::Kind::kString:
      AppendJsonString(v.str(), o.ensure_ascii, out);
      return absl::OkStatus();
    case Value::Kind::kArray: {
      if (v.array().dict_view != nullptr) break;
      const auto& items = v.array().items;
      if (items.empty()) {
        out += "[]";
        return absl::OkStatus();
      }
      out.push_back('[');
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out += o.item_separator;
        if (o.indent) Newline(o, level + 1, out);
        if (absl::Status s = Append(items[i], o, level + 1, out); !s.ok()) return s;
      }
      if (o.indent) Newline(o, level, out);
      out.push_back(']');
      return absl::OkStatus();
    }
    case Value::Kind::kObject: {
      const auto& items = v.object().items;
      if (items.empty()) {
        out += "{}";
        return absl::OkStatus();
      }
      std::vector<const std::pair<std::string, Value>*> order;
      for (const auto& item : items) order.push_back(&item);
      if (o.sort_keys) {
        std::stable_sort(order.begin(), order.end(),
                         [](const auto* a, const auto* b) { return a->first < b->first; });
      }
      out.push_back('{');
      for (size_t i = 0; i < order.size(); ++i) {
        if (i > 0) out += o.item_separator;
        if (o.indent) Newline(o, level + 1, out);
        AppendJsonString(order[i]->first, o.ensure_ascii, out);
        out += o.key_separator;
        if (absl::Status s = Append(order[i]->second, o, level + 1, out); !s.ok()) return s;
      }
      if (o.indent) Newline(o, level, out);
      out.push_back('}');
      return absl::OkStatus();
    }
    case Value::Kind::kUndefined:
    case Value::Kind::kNamespace:
    case Value::Kind::kCallable:
      break;
  }
  return absl::InvalidArgumentError(
      Cat("Object of type ", v.TypeName(), " is not JSON serializable"));
}

}  // namespace

absl::Status AppendPyJson(const Value& value, const PyJsonOptions& options, std::string& out) {
  return Append(value, options, 0, out);
}

}  // namespace moeserve::jinja
