#include "scheduler/tokenizer/incremental_detokenizer.h"

#include "absl/strings/str_cat.h"

namespace moeserve {

absl::StatusOr<std::string> IncrementalDetokenizer::Push(int32_t id) {
  if (id < 0) return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is negative"));
  if (!tokenizer_.HasToken(id) || (options_.skip_special_tokens && tokenizer_.IsSpecial(id))) {
    return std::string();
  }
  return utf8_.Push(tokenizer_.TokenBytes(id));
}

}  // namespace moeserve
