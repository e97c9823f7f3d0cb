// Helpers shared by the config.json parsers (config.cc and one file per
// architecture that needs its own, e.g. deepseek_v4_config.cc): fields read
// with messages that name the field, the expected kind and the value found.
// Internal to runtime/model/.
#ifndef MOESERVE_RUNTIME_MODEL_CONFIG_FIELDS_H_
#define MOESERVE_RUNTIME_MODEL_CONFIG_FIELDS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace moeserve::config_internal {

// Reads config fields with messages that name the field, the expected kind
// and the value found.
class FieldReader {
 public:
  explicit FieldReader(const nlohmann::json& j) : j_(j) {}

  bool Has(absl::string_view key) const {
    return j_.contains(std::string(key)) && !j_.at(std::string(key)).is_null();
  }

  absl::StatusOr<int64_t> Int(absl::string_view key) const {
    if (!Has(key)) return Missing(key, "an integer");
    const nlohmann::json& v = j_.at(std::string(key));
    if (!v.is_number_integer()) return Wrong(key, "an integer", v);
    return v.get<int64_t>();
  }
  absl::StatusOr<int64_t> Int(absl::string_view key, int64_t fallback) const {
    return Has(key) ? Int(key) : absl::StatusOr<int64_t>(fallback);
  }
  absl::StatusOr<double> Number(absl::string_view key, double fallback) const {
    if (!Has(key)) return fallback;
    const nlohmann::json& v = j_.at(std::string(key));
    if (!v.is_number()) return Wrong(key, "a number", v);
    return v.get<double>();
  }
  absl::StatusOr<bool> Bool(absl::string_view key, bool fallback) const {
    if (!Has(key)) return fallback;
    const nlohmann::json& v = j_.at(std::string(key));
    if (!v.is_boolean()) return Wrong(key, "true or false", v);
    return v.get<bool>();
  }
  absl::StatusOr<std::string> String(absl::string_view key, std::string fallback) const {
    if (!Has(key)) return fallback;
    const nlohmann::json& v = j_.at(std::string(key));
    if (!v.is_string()) return Wrong(key, "a string", v);
    return v.get<std::string>();
  }

  // Errors in the style of the readers above, for parsers' own checks.
  static absl::Status Missing(absl::string_view key, absl::string_view kind) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: field \"", key, "\" is missing; expected ", kind));
  }
  static absl::Status Wrong(absl::string_view key, absl::string_view kind,
                            const nlohmann::json& v) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: field \"", key, "\" is ", v.dump(), "; expected ", kind));
  }

 private:
  const nlohmann::json& j_;
};

#define MOESERVE_ASSIGN(lhs, expr)    \
  do {                                \
    auto _v = (expr);                 \
    if (!_v.ok()) return _v.status(); \
    lhs = *std::move(_v);             \
  } while (0)

inline absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: ", what));
}

inline absl::Status RequirePositive(absl::string_view name, int64_t value) {
  if (value > 0) return absl::OkStatus();
  return Invalid(absl::StrCat("\"", name, "\" must be positive, got ", value));
}

}  // namespace moeserve::config_internal

#endif  // MOESERVE_RUNTIME_MODEL_CONFIG_FIELDS_H_
