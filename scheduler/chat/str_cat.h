// absl::StrCat that also takes std::string_view: the abseil this project
// builds against has its own absl::string_view, not an alias of
// std::string_view, so the two do not convert implicitly.
#ifndef MOESERVE_SCHEDULER_CHAT_STR_CAT_H_
#define MOESERVE_SCHEDULER_CHAT_STR_CAT_H_

#include <string>
#include <string_view>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace moeserve::jinja {

inline absl::string_view ToAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

template <typename T>
decltype(auto) CatArg(const T& v) {
  if constexpr (std::is_same_v<T, std::string_view>) {
    return ToAbsl(v);
  } else {
    return (v);
  }
}

template <typename... Args>
std::string Cat(const Args&... args) {
  return absl::StrCat(CatArg(args)...);
}

}  // namespace moeserve::jinja

#endif  // MOESERVE_SCHEDULER_CHAT_STR_CAT_H_
