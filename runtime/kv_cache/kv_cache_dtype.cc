#include "runtime/kv_cache/kv_cache_dtype.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moeserve {

absl::StatusOr<KvCacheDtypeChoice> ParseKvCacheDtype(std::string_view value,
                                                     std::string_view flag) {
  if (value == "auto") return KvCacheDtypeChoice{};
  for (KvCacheDtype d : {KvCacheDtype::kF32, KvCacheDtype::kBF16, KvCacheDtype::kFP8E4M3}) {
    if (value == KvCacheDtypeName(d)) return KvCacheDtypeChoice{d};
  }
  return absl::InvalidArgumentError(absl::StrCat(std::string(flag), " must be one of ",
                                                 std::string(kKvCacheDtypeWords), ", got \"",
                                                 std::string(value), "\""));
}

KvCacheDtype ResolveKvCacheDtype(KvCacheDtypeChoice choice, KvCacheDevice device) {
  if (choice.has_value()) return *choice;
  return device == KvCacheDevice::kCuda ? KvCacheDtype::kBF16 : KvCacheDtype::kF32;
}

}  // namespace moeserve
