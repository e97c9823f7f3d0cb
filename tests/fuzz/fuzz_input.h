// Helpers shared by the fuzz targets of tests/fuzz/.
#ifndef MOESERVE_TESTS_FUZZ_FUZZ_INPUT_H_
#define MOESERVE_TESTS_FUZZ_FUZZ_INPUT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace moeserve::fuzz {

// Targets that take two documents read them from one input, split at the
// first line "----" (so that a seed stays a readable text file). Without
// that line the second part is empty.
inline constexpr std::string_view kPartSeparator = "\n----\n";

inline std::pair<std::string, std::string> SplitInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t at = input.find(kPartSeparator);
  if (at == std::string_view::npos) return {std::string(input), std::string()};
  return {std::string(input.substr(0, at)), std::string(input.substr(at + kPartSeparator.size()))};
}

// Aborts (a finding) when `condition` is false: a parser broke a guarantee
// its header makes about what it returns.
inline void Require(bool condition) {
  if (!condition) __builtin_trap();
}

}  // namespace moeserve::fuzz

#endif  // MOESERVE_TESTS_FUZZ_FUZZ_INPUT_H_
