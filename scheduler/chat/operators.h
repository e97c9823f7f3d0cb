// Python's operators and lookups as a Jinja2 template sees them: arithmetic
// on ints/floats/strings/lists, `in`, iteration, and the sandboxed
// environment's attribute and item lookup (a missing attribute or key gives
// undefined; using undefined in arithmetic or looking into it is an error).
// Errors carry Python's wording where it helps ("can only concatenate str
// (not "NoneType") to str"); the evaluator adds the template line.
#ifndef MOESERVE_SCHEDULER_CHAT_OPERATORS_H_
#define MOESERVE_SCHEDULER_CHAT_OPERATORS_H_

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "scheduler/chat/value.h"

namespace moeserve::jinja {

// The error for using an undefined value: its hint, e.g. "'x' is undefined".
absl::Status UndefinedError(const Value& undefined);

// a op b for op in + - * / // % **. Results longer than max_bytes (string or
// list repetition, concatenation) are refused.
absl::StatusOr<Value> BinaryOp(std::string_view op, const Value& a, const Value& b,
                               int64_t max_bytes);
// -v or +v.
absl::StatusOr<Value> UnaryOp(std::string_view op, const Value& v);
// `item in container`.
absl::StatusOr<bool> Contains(const Value& container, const Value& item);
// The items a for loop visits: list items, dict keys, string characters;
// nothing for undefined.
absl::StatusOr<std::vector<Value>> Iterate(const Value& v);
// obj.name and obj[key] with the sandbox's rules.
absl::StatusOr<Value> GetAttr(const Value& obj, std::string_view name);
absl::StatusOr<Value> GetItem(const Value& obj, const Value& key);
// obj[start:stop:step]; each bound is None (unset) or an int. Jinja slices
// with Python's own subscription, so a bad bound or an object that cannot be
// sliced is an error, not undefined.
absl::StatusOr<Value> GetSlice(const Value& obj, const Value& start, const Value& stop,
                               const Value& step);
// len(v), or an error for types without a length.
absl::StatusOr<int64_t> Length(const Value& v);

}  // namespace moeserve::jinja

#endif  // MOESERVE_SCHEDULER_CHAT_OPERATORS_H_
