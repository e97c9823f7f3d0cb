// What tokenizer_config.json says about special tokens, and which tokens
// Encode(text, add_special_tokens = true) puts around the text.
//
// transformers decides the latter in two ways, and so do we:
//   - Llama-family tokenizer classes (LlamaTokenizerFast, as DeepSeek-V3
//     declares, CodeLlama, Gemma, Cohere) rebuild the post-processor from
//     add_bos_token (default true) and add_eos_token (default false): BOS
//     first, EOS last. DeepSeek-V3's tokenizer.json has only a ByteLevel
//     post-processor, so this is where its BOS comes from.
//   - Every other class keeps tokenizer.json's post_processor: ByteLevel (adds
//     nothing), TemplateProcessing (its single-sequence template), or a
//     Sequence of those. Other post-processors are an error naming them.
#ifndef MOESERVE_SCHEDULER_TOKENIZER_SPECIAL_TOKENS_H_
#define MOESERVE_SCHEDULER_TOKENIZER_SPECIAL_TOKENS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace moeserve {

struct TokenizerConfig {
  // Token contents, as named by bos_token etc. (a string or an AddedToken
  // object), when set and not null.
  std::optional<std::string> bos_token, eos_token, pad_token, unk_token;
  std::vector<std::string> additional_special_tokens;
  std::string tokenizer_class;  // "" when absent
  std::optional<bool> add_bos_token, add_eos_token;
  bool split_special_tokens = false;
};

// Reads the fields above from tokenizer_config.json's object. Errors name the
// field. clean_up_tokenization_spaces true is rejected: decoding would then
// rewrite " ." to "." and the like, which neither supported model wants.
absl::StatusOr<TokenizerConfig> ParseTokenizerConfig(const nlohmann::json& config);

struct SpecialTokenTemplate {
  std::vector<int32_t> prefix;  // ids before the text's
  std::vector<int32_t> suffix;  // ids after
};

// The tokens added around one sequence (see the top of this file).
// `post_processor` is tokenizer.json's value; `token_id` looks up a token's
// id by content. Errors name the file (`config_file` or `tokenizer_file`)
// and the field.
absl::StatusOr<SpecialTokenTemplate> BuildSpecialTokenTemplate(
    const TokenizerConfig& config, const nlohmann::json& post_processor,
    absl::FunctionRef<std::optional<int32_t>(const std::string&)> token_id,
    const std::string& config_file, const std::string& tokenizer_file);

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_TOKENIZER_SPECIAL_TOKENS_H_
