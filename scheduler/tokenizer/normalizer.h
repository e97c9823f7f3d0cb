// The `normalizer` of tokenizer.json: null, a Unicode normalization form
// (NFC, NFD, NFKC, NFKD, computed by ICU) or a Sequence of them. Any other
// normalizer is an error naming its type and where it is in the file.
#ifndef MOESERVE_SCHEDULER_TOKENIZER_NORMALIZER_H_
#define MOESERVE_SCHEDULER_TOKENIZER_NORMALIZER_H_

#include <unicode/uversion.h>

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

U_NAMESPACE_BEGIN
class Normalizer2;
U_NAMESPACE_END

namespace moeserve {

class Normalizer {
 public:
  // `config` is the "normalizer" value; `field` its path in the file, for
  // errors (e.g. "normalizer").
  static absl::StatusOr<Normalizer> FromJson(const nlohmann::json& config,
                                             const std::string& field);

  // True when the normalizer changes nothing (null or an empty Sequence).
  bool identity() const { return forms_.empty(); }

  // Normalizes well-formed UTF-8 `text`. Returns false and leaves `*out`
  // alone when `text` is already normalized (the common case, found without
  // copying); otherwise writes the normalized text to `*out`.
  // Thread safe (ICU normalizers are immutable).
  bool Normalize(std::string_view text, std::string* out) const;

 private:
  std::vector<const icu::Normalizer2*> forms_;  // applied in order; owned by ICU
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_TOKENIZER_NORMALIZER_H_
