#include "scheduler/chat/callable.h"

#include "scheduler/chat/str_cat.h"

namespace moeserve::jinja {

absl::StatusOr<std::vector<std::optional<Value>>> BindArgs(
    std::string_view fn, const CallArgs& args, std::initializer_list<std::string_view> params) {
  std::vector<std::optional<Value>> out(params.size());
  if (args.positional.size() > params.size()) {
    return absl::InvalidArgumentError(Cat(fn, ": takes at most ", params.size(), " arguments (",
                                          args.positional.size(), " given)"));
  }
  for (size_t i = 0; i < args.positional.size(); ++i) out[i] = args.positional[i];
  for (const auto& [key, value] : args.keywords) {
    size_t i = 0;
    for (std::string_view p : params) {
      if (p == key) break;
      ++i;
    }
    if (i == params.size()) {
      return absl::InvalidArgumentError(Cat(fn, ": unexpected keyword argument '", key, "'"));
    }
    if (out[i]) {
      return absl::InvalidArgumentError(Cat(fn, ": multiple values for argument '", key, "'"));
    }
    out[i] = value;
  }
  return out;
}

absl::StatusOr<int64_t> IntArg(std::string_view fn, std::string_view what, const Value& v) {
  if (v.is_integral()) return v.int_value();
  return absl::InvalidArgumentError(
      Cat(fn, ": ", what, " must be an integer, not '", v.TypeName(), "'"));
}

absl::StatusOr<std::string> StrArg(std::string_view fn, std::string_view what, const Value& v) {
  if (v.is_string()) return v.str();
  return absl::InvalidArgumentError(
      Cat(fn, ": ", what, " must be a str, not '", v.TypeName(), "'"));
}

}  // namespace moeserve::jinja
