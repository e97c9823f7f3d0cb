// Parsing the JSON of a checkpoint (safetensors headers, config.json, the
// shard index) with its nesting bounded.
#ifndef MOESERVE_RUNTIME_CHECKPOINT_BOUNDED_JSON_H_
#define MOESERVE_RUNTIME_CHECKPOINT_BOUNDED_JSON_H_

#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace moeserve {

// Deepest nesting of arrays and objects accepted. Real files nest 3 or 4
// levels; the bound is what keeps nlohmann's recursive dump, copy and
// comparison (error messages dump the offending value) from overflowing the
// stack on a file of a few MB of "[[[[...".
inline constexpr int kMaxJsonDepth = 64;

// Parses `text`. InvalidArgument for malformed JSON (nlohmann's message, with
// the line and column) and for nesting deeper than kMaxJsonDepth; callers
// prefix the file's name.
absl::StatusOr<nlohmann::json> ParseBoundedJson(std::string_view text);

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_CHECKPOINT_BOUNDED_JSON_H_
