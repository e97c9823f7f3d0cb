// The `pre_tokenizer` of tokenizer.json: how text is cut into words before
// BPE. Supported, alone or in a Sequence: Split (Regex or String pattern, all
// five behaviors, invert), Digits, and ByteLevel, which must come last and
// must be there (only byte-level BPE is supported). Anything else is an error
// naming the step's type and its place in the file.
#ifndef MOESERVE_SCHEDULER_TOKENIZER_PRE_TOKENIZER_H_
#define MOESERVE_SCHEDULER_TOKENIZER_PRE_TOKENIZER_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"
#include "scheduler/tokenizer/split_regex.h"

namespace moeserve {

class PreTokenizer {
 public:
  // `config` is the "pre_tokenizer" value; `field` its path, for errors.
  static absl::StatusOr<PreTokenizer> FromJson(const nlohmann::json& config,
                                               const std::string& field);

  // Calls `word` for each non-empty word of well-formed UTF-8 `text`, in
  // order, as raw bytes (the byte-level mapping is the BPE model's business).
  // Thread safe.
  void Split(std::string_view text, absl::FunctionRef<void(std::string_view)> word) const;

 private:
  // What a Split does with the pieces its pattern matches (the delimiters).
  enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

  struct Step {
    std::shared_ptr<const SplitRegex> regex;  // Split (String patterns escaped), Digits
    Behavior behavior = Behavior::kIsolated;
    bool invert = false;
  };

  // Runs steps_[step...] on `text`; ByteLevel's prefix space goes on before
  // ByteLevel's own split (or before the words are handed out).
  void Apply(size_t step, std::string_view text,
             absl::FunctionRef<void(std::string_view)> word) const;
  void ApplyFrom(size_t step, std::string_view text,
                 absl::FunctionRef<void(std::string_view)> word) const;

  std::vector<Step> steps_;        // applied in order
  bool byte_level_regex_ = false;  // the last step is ByteLevel's GPT-2 split
  bool add_prefix_space_ = false;  // ByteLevel: a space before each piece that lacks one
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_TOKENIZER_PRE_TOKENIZER_H_
