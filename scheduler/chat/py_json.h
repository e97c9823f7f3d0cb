// json.dumps as Python writes it, for the `tojson` filter that Hugging Face
// transformers installs: ensure_ascii=False, ", " and ": " separators (","
// when indenting), keys in insertion order unless sort_keys, floats in
// Python's repr, NaN/Infinity as Python spells them.
#ifndef MOESERVE_SCHEDULER_CHAT_PY_JSON_H_
#define MOESERVE_SCHEDULER_CHAT_PY_JSON_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "scheduler/chat/value.h"

namespace moeserve::jinja {

struct PyJsonOptions {
  bool ensure_ascii = false;
  std::optional<std::string> indent;  // unset: one line; an int n is n spaces
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
};

// Appends json.dumps(value) to out. Undefined, namespaces and callables are
// not serializable: an error names the type, as Python's TypeError does.
absl::Status AppendPyJson(const Value& value, const PyJsonOptions& options, std::string& out);

}  // namespace moeserve::jinja

#endif  // MOESERVE_SCHEDULER_CHAT_PY_JSON_H_
