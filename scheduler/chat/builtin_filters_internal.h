// Shared between the files that implement Jinja's filters; not an interface
// of the chat template library.
#ifndef MOESERVE_SCHEDULER_CHAT_BUILTIN_FILTERS_INTERNAL_H_
#define MOESERVE_SCHEDULER_CHAT_BUILTIN_FILTERS_INTERNAL_H_

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "scheduler/chat/callable.h"
#include "scheduler/chat/value.h"

namespace moeserve::jinja {

class Renderer;

namespace filters {

using Args = std::vector<std::optional<Value>>;

// BindArgs for filter `name`.
absl::StatusOr<Args> Bind(std::string_view name, const CallArgs& args,
                          std::initializer_list<std::string_view> params);
// A boolean argument: given and truthy.
inline bool Flag(const std::optional<Value>& v) { return v && v->Truthy(); }
// Jinja's soft_str: str(value), with undefined as "".
inline std::string SoftStr(const Value& v) { return ToPyStr(v); }

// Filters over sequences and mappings (builtin_sequence_filters.cc).
absl::StatusOr<Value> DictSort(const Value& v, CallArgs& args, Renderer& r);
absl::StatusOr<Value> First(const Value& v, CallArgs& args, Renderer& r);
absl::StatusOr<Value> Last(const Value& v, CallArgs& args, Renderer& r);
absl::StatusOr<Value> Items(const Value& v, CallArgs& args, Renderer& r);
absl::StatusOr<Value> Join(const Value& v, CallArgs& args, Renderer& r);
absl::StatusOr<Value> List(const Value& v, CallArgs& args, Renderer& r);
absl::StatusOr<Value> Map(const Value& v, CallArgs& args, Renderer& r);
absl::StatusOr<Value> Select(const Value& v, CallArgs& args, Renderer& r);
absl::StatusOr<Value> Reject(const Value& v, CallArgs& args, Renderer& r);
absl::StatusOr<Value> SelectAttr(const Value& v, CallArgs& args, Renderer& r);
absl::StatusOr<Value> RejectAttr(const Value& v, CallArgs& args, Renderer& r);
absl::StatusOr<Value> Max(const Value& v, CallArgs& args, Renderer& r);
absl::StatusOr<Value> Min(const Value& v, CallArgs& args, Renderer& r);
absl::StatusOr<Value> Reverse(const Value& v, CallArgs& args, Renderer& r);
absl::StatusOr<Value> Sort(const Value& v, CallArgs& args, Renderer& r);
absl::StatusOr<Value> Sum(const Value& v, CallArgs& args, Renderer& r);
absl::StatusOr<Value> Unique(const Value& v, CallArgs& args, Renderer& r);

}  // namespace filters
}  // namespace moeserve::jinja

#endif  // MOESERVE_SCHEDULER_CHAT_BUILTIN_FILTERS_INTERNAL_H_
