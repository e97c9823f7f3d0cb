// The --kv-cache-dtype choice: parsed once from a flag, resolved once when the
// cache is allocated.
#ifndef MOESERVE_RUNTIME_KV_CACHE_KV_CACHE_DTYPE_H_
#define MOESERVE_RUNTIME_KV_CACHE_KV_CACHE_DTYPE_H_

#include <optional>
#include <string_view>

#include "absl/status/statusor.h"
#include "kernels/kv_cache_layout.h"

namespace moeserve {

// What a user asked for: a dtype, or std::nullopt for "auto".
using KvCacheDtypeChoice = std::optional<KvCacheDtype>;

// The flag's accepted words, for --help and error messages.
inline constexpr std::string_view kKvCacheDtypeWords = "auto, fp32, bf16, fp8";

// "auto" | "fp32" | "bf16" | "fp8". InvalidArgument otherwise, naming
// `flag` (e.g. "--kv-cache-dtype"), the value and the accepted words.
absl::StatusOr<KvCacheDtypeChoice> ParseKvCacheDtype(std::string_view value,
                                                     std::string_view flag = "--kv-cache-dtype");

// What "auto" gives on a device: fp32 on the CPU (the exact reference), bf16
// on CUDA (half the bytes of fp32, the dtype the GPU attention is built for,
// within bf16 rounding of the reference; fp8 is an explicit choice).
enum class KvCacheDevice { kCpu, kCuda };
KvCacheDtype ResolveKvCacheDtype(KvCacheDtypeChoice choice, KvCacheDevice device);

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_KV_CACHE_KV_CACHE_DTYPE_H_
