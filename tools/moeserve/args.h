// Command-line arguments of the moeserve subcommands: `--name value` or
// `--name=value`, flags without a value, and positional words. Every flag a
// command reads is declared, so unknown flags and bad values are errors that
// name the flag.
#ifndef MOESERVE_TOOLS_MOESERVE_ARGS_H_
#define MOESERVE_TOOLS_MOESERVE_ARGS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moeserve {

class Args {
 public:
  // `valued` flags take a value; `switches` do not.
  static absl::StatusOr<Args> Parse(const std::vector<std::string>& argv,
                                    const std::set<std::string>& valued,
                                    const std::set<std::string>& switches);

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::optional<std::string> Get(const std::string& name) const;
  absl::StatusOr<std::string> Required(const std::string& name) const;
  absl::StatusOr<int64_t> Int(const std::string& name, int64_t fallback) const;
  absl::StatusOr<uint64_t> Uint(const std::string& name, uint64_t fallback) const;
  absl::StatusOr<double> Double(const std::string& name, double fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

// "0,17,42" -> {0, 17, 42}; errors name the offending item.
absl::StatusOr<std::vector<int32_t>> ParseIdList(const std::string& text);

}  // namespace moeserve

#endif  // MOESERVE_TOOLS_MOESERVE_ARGS_H_
