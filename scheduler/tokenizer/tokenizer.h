// The coordinator's tokenizer: byte-level BPE exactly as Hugging Face runs a
// published tokenizer.json + tokenizer_config.json (DeepSeek-V3/R1/V3.1,
// Qwen3 and every other byte-level BPE model whose parts are supported).
//
//   text -> added tokens found (special tokens, "<think>", ...)
//        -> normalizer (NFC for Qwen3; none for DeepSeek-V3)
//        -> pre-tokenizer (Split regexes on RE2, then ByteLevel)
//        -> BPE merges per word -> ids -> special tokens added (BOS, ...)
//
// Which parts are supported, and what is an error, is in normalizer.h,
// pre_tokenizer.h, bpe.h and added_tokens.h; docs/tokenizers.md has the
// whole picture and where it deliberately differs from the JavaScript port.
//
// Thread safety: a Tokenizer is immutable after Load except for its BPE word
// cache, which is internally synchronized; Encode, Decode and the lookups may
// be called from any number of threads at once.
#ifndef MOESERVE_SCHEDULER_TOKENIZER_TOKENIZER_H_
#define MOESERVE_SCHEDULER_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "scheduler/tokenizer/added_tokens.h"
#include "scheduler/tokenizer/bpe.h"
#include "scheduler/tokenizer/normalizer.h"
#include "scheduler/tokenizer/pre_tokenizer.h"
#include "scheduler/tokenizer/special_tokens.h"

namespace moeserve {

struct DecodeOptions {
  bool skip_special_tokens = false;  // leave out the tokens in special_ids()
};

class Tokenizer {
 public:
  // Loads `dir`/tokenizer.json and `dir`/tokenizer_config.json (a model
  // directory works as is). Errors name the file and the field: NotFound for
  // a missing file, InvalidArgument for malformed content, Unimplemented
  // never (an unsupported component is InvalidArgument naming it).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& dir);

  // The same from the two files' contents; `source` names them in errors.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view tokenizer_json,
                                                             std::string_view tokenizer_config,
                                                             const std::string& source);

  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of UTF-8 `text`. Special tokens written in the text are
  // recognized unless tokenizer_config.json sets split_special_tokens. With
  // `add_special_tokens`, the model's prefix/suffix tokens are added as
  // transformers adds them (BOS for DeepSeek-V3, nothing for Qwen3).
  // InvalidArgument, naming the byte offset, when `text` is not valid UTF-8.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_special_tokens) const;

  // The text of `ids`: their bytes joined, ill-formed UTF-8 replaced by
  // U+FFFD as Hugging Face does. Ids that name no token decode to nothing, as
  // in Hugging Face (models pad their embeddings past the tokenizer: 129280
  // rows for DeepSeek-V3's 128815 tokens); negative ids are InvalidArgument.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     const DecodeOptions& options = {}) const;

  // Largest token id + 1, added tokens included.
  int32_t vocab_size() const { return static_cast<int32_t>(id_bytes_.size()); }
  // Whether `id` names a token (in [0, vocab_size()) and not a hole).
  bool HasToken(int32_t id) const { return id >= 0 && id < vocab_size() && has_token_[id]; }

  // tokenizer_config.json's bos_token / eos_token / pad_token, when set.
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  std::optional<int32_t> pad_id() const { return pad_id_; }

  // Special tokens: the added tokens marked special and the tokens that
  // tokenizer_config.json names (bos, eos, pad, unk, additional special).
  // Sorted.
  const std::vector<int32_t>& special_ids() const { return special_ids_; }
  bool IsSpecial(int32_t id) const { return HasToken(id) && is_special_[id]; }

  // The token string of `id` as the files spell it (byte-level: "Ġthe"), or
  // nullopt; and back.
  std::optional<std::string_view> IdToToken(int32_t id) const;
  std::optional<int32_t> TokenToId(std::string_view token) const;

  // The bytes `id` decodes to (empty for ids that name no token); the
  // incremental detokenizer joins these. Requires id >= 0.
  std::string_view TokenBytes(int32_t id) const {
    return id < vocab_size() ? std::string_view(id_bytes_[id]) : std::string_view();
  }

  // The ids Encode(text, true) puts before and after the text's.
  const std::vector<int32_t>& prefix_ids() const { return prefix_ids_; }
  const std::vector<int32_t>& suffix_ids() const { return suffix_ids_; }

  // The BPE word cache's counters (for benchmarks).
  BpeModel::CacheStats cache_stats() const { return bpe_->cache_stats(); }

 private:
  Tokenizer() = default;

  // Load steps: the per-id tables from the vocabulary and the added tokens;
  // then which ids are special and which are BOS, EOS and padding.
  absl::Status BuildIdTables(const std::vector<AddedToken>& added);
  absl::Status MarkSpecialTokens(const std::vector<AddedToken>& added,
                                 const TokenizerConfig& config);

  // Ids of one run of text between raw-matched added tokens.
  void EncodeRun(std::string_view run, std::vector<int32_t>* ids) const;

  std::unique_ptr<BpeModel> bpe_;
  Normalizer normalizer_;
  PreTokenizer pre_tokenizer_;
  std::unique_ptr<AddedTokenMatcher> raw_added_;         // normalized: false
  std::unique_ptr<AddedTokenMatcher> normalized_added_;  // normalized: true
  bool split_special_tokens_ = false;
  absl::flat_hash_map<std::string, int32_t> added_ids_;  // content -> id

  std::vector<std::string> id_tokens_;  // per id: the token string ("" for a hole)
  std::vector<std::string> id_bytes_;   // per id: what it decodes to
  std::vector<bool> has_token_;
  std::vector<bool> is_special_;
  std::vector<int32_t> special_ids_;
  std::optional<int32_t> bos_id_, eos_id_, pad_id_;
  std::vector<int32_t> prefix_ids_, suffix_ids_;
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_TOKENIZER_TOKENIZER_H_
