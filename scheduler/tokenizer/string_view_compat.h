// abseil as Debian 12 ships it (20220623) has its own absl::string_view, not
// std::string_view: absl::StrCat and the heterogeneous lookups of
// absl::flat_hash_map<std::string, ...> take the former only.
#ifndef MOESERVE_SCHEDULER_TOKENIZER_STRING_VIEW_COMPAT_H_
#define MOESERVE_SCHEDULER_TOKENIZER_STRING_VIEW_COMPAT_H_

#include <string_view>

#include "absl/strings/string_view.h"

namespace moeserve {

inline absl::string_view AsAbsl(std::string_view s) { return {s.data(), s.size()}; }

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_TOKENIZER_STRING_VIEW_COMPAT_H_
