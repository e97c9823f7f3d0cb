#include "runtime/checkpoint/bounded_json.h"

#include <stdexcept>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moeserve {
namespace {

// Thrown by the parser callback to stop at the first level too deep; the
// parser is iterative, so without it the whole document would still be read.
struct TooDeep : std::exception {};

}  // namespace

absl::StatusOr<nlohmann::json> ParseBoundedJson(std::string_view text) {
  using nlohmann::json;
  const json::parser_callback_t bound = [](int depth, json::parse_event_t event, json&) {
    // depth counts the enclosing containers: a top-level array starts at 0.
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= kMaxJsonDepth) {
      throw TooDeep();
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), bound);
  } catch (const TooDeep&) {
    return absl::InvalidArgumentError(
        absl::StrCat("JSON nested deeper than ", kMaxJsonDepth, " levels"));
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed JSON: ", e.what()));
  }
}

}  // namespace moeserve
