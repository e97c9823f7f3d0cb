// The byte-level BPE model of tokenizer.json ("model": {"type": "BPE"}):
// vocabulary, merge ranks, and the merge loop of Hugging Face tokenizers
// (repeatedly merge the adjacent pair of lowest rank, leftmost first).
#ifndef MOESERVE_SCHEDULER_TOKENIZER_BPE_H_
#define MOESERVE_SCHEDULER_TOKENIZER_BPE_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace moeserve {

class BpeModel {
 public:
  // Entries of the "vocab" object, in file order.
  using VocabEntries = std::vector<std::pair<std::string, nlohmann::json>>;

  // `config` is the "model" object of tokenizer.json; `field` its path, for
  // errors. Supports unk_token, fuse_unk and ignore_merges; rejects dropout,
  // byte_fallback, and non-empty continuing_subword_prefix /
  // end_of_word_suffix, naming the field. Every merge's parts and result must
  // be in the vocabulary. The vocabulary comes from `vocab` when given (the
  // loader streams it out of the file: as a JSON object it is slow to build)
  // or else from config["vocab"].
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const nlohmann::json& config,
                                                            const std::string& field,
                                                            const VocabEntries* vocab = nullptr);
  ~BpeModel();
  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

  // Appends the ids of one pre-token, given as raw bytes (its byte-level
  // spelling is what the vocabulary holds). Thread safe: results are cached
  // per word in a cache shared by all threads (sharded, each shard behind its
  // own mutex, cleared when full).
  void Encode(std::string_view word, std::vector<int32_t>* ids) const;

  // The vocabulary: byte-level token strings and their ids.
  const absl::flat_hash_map<std::string, int32_t>& vocab() const { return vocab_; }

  // Words encoded since construction and how many were found in the cache.
  struct CacheStats {
    uint64_t lookups = 0;
    uint64_t hits = 0;
  };
  CacheStats cache_stats() const;

 private:
  struct MergeRule {
    int32_t rank;
    int32_t id;  // the merged token
  };
  class Cache;

  BpeModel();
  void MergeWord(std::string_view word, std::vector<int32_t>* ids) const;
  std::optional<MergeRule> FindMerge(int32_t left, int32_t right) const {
    const auto it = merges_.find((static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
                                 static_cast<uint32_t>(right));
    if (it == merges_.end()) return std::nullopt;
    return it->second;
  }

  absl::flat_hash_map<std::string, int32_t> vocab_;
  absl::flat_hash_map<uint64_t, MergeRule> merges_;  // (left << 32 | right) -> merge
  std::array<int32_t, 256> byte_ids_{};              // each byte's own token; -1: none
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  // ignore_merges: whole words found here are emitted as is (raw bytes -> id).
  absl::flat_hash_map<std::string, int32_t> word_ids_;
  bool ignore_merges_ = false;
  std::unique_ptr<Cache> cache_;
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_TOKENIZER_BPE_H_
