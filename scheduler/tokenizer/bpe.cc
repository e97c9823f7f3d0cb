#include "scheduler/tokenizer/bpe.h"

#include <algorithm>
#include <atomic>

#include "absl/base/thread_annotations.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"
#include "scheduler/tokenizer/byte_level.h"
#include "scheduler/tokenizer/string_view_compat.h"

namespace moeserve {
namespace {

using nlohmann::json;

// Words longer than this are merged every time: they rarely repeat.
constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kCacheShards = 32;
constexpr size_t kCacheWordsPerShard = 4096;
// Per-thread merge scratch kept between words, in symbols.
constexpr size_t kKeptScratchSymbols = 1 << 16;

absl::Status FieldError(absl::string_view field, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", message));
}

// null, or the empty string: the default that changes nothing.
bool NullOrEmpty(const json& config, const char* key) {
  const auto it = config.find(key);
  return it == config.end() || it->is_null() ||
         (it->is_string() && it->get_ref<const std::string&>().empty());
}

bool Flag(const json& config, const char* key) {
  const auto it = config.find(key);
  return it != config.end() && it->is_boolean() && it->get<bool>();
}

}  // namespace

class BpeModel::Cache {
 public:
  // Appends the cached ids of `word` and returns true, or returns false.
  bool Find(std::string_view word, size_t hash, std::vector<int32_t>* ids) {
    lookups_.fetch_add(1, std::memory_order_relaxed);
    Shard& shard = shards_[hash % kCacheShards];
    absl::MutexLock lock(&shard.mu);
    const auto it = shard.words.find(AsAbsl(word));
    if (it == shard.words.end()) return false;
    ids->insert(ids->end(), it->second.begin(), it->second.end());
    hits_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }

  void Insert(std::string_view word, size_t hash, const int32_t* ids, size_t n) {
    Shard& shard = shards_[hash % kCacheShards];
    absl::MutexLock lock(&shard.mu);
    if (shard.words.size() >= kCacheWordsPerShard) shard.words.clear();
    shard.words.try_emplace(std::string(word), ids, ids + n);
  }

  CacheStats stats() const {
    return {lookups_.load(std::memory_order_relaxed), hits_.load(std::memory_order_relaxed)};
  }

 private:
  struct Shard {
    absl::Mutex mu;
    absl::flat_hash_map<std::string, std::vector<int32_t>> words ABSL_GUARDED_BY(mu);
  };
  std::array<Shard, kCacheShards> shards_;
  std::atomic<uint64_t> lookups_{0};
  std::atomic<uint64_t> hits_{0};
};

BpeModel::BpeModel() : cache_(std::make_unique<Cache>()) {}
BpeModel::~BpeModel() = default;

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const json& config,
                                                             const std::string& field,
                                                             const VocabEntries* vocab) {
  if (!config.is_object()) return FieldError(field, "expected an object");
  const auto type = config.find("type");
  if (type != config.end() && !(type->is_string() && type->get<std::string>() == "BPE")) {
    return FieldError(absl::StrCat(field, ".type"),
                      absl::StrCat("model type ", type->dump(), " is not supported (only BPE)"));
  }
  if (const auto it = config.find("dropout"); it != config.end() && !it->is_null()) {
    return FieldError(absl::StrCat(field, ".dropout"), "BPE dropout is not supported");
  }
  if (Flag(config, "byte_fallback")) {
    return FieldError(absl::StrCat(field, ".byte_fallback"), "byte fallback is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (!NullOrEmpty(config, key)) {
      return FieldError(absl::StrCat(field, ".", key), "a non-empty value is not supported");
    }
  }
  std::unique_ptr<BpeModel> model(new BpeModel);

  const auto vocab_object = config.find("vocab");
  if (vocab_object == config.end() || !vocab_object->is_object()) {
    return FieldError(absl::StrCat(field, ".vocab"), "expected an object of token -> id");
  }
  VocabEntries from_config;
  if (vocab == nullptr) {
    for (const auto& [token, id] : vocab_object->items()) from_config.emplace_back(token, id);
    vocab = &from_config;
  }
  model->vocab_.reserve(vocab->size());
  for (const auto& [token, id] : *vocab) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
      return FieldError(absl::StrCat(field, ".vocab[\"", token, "\"]"),
                        absl::StrCat("id ", id.dump(), " is not a non-negative 32-bit integer"));
    }
    // A repeated token keeps its last id, as a JSON object keeps its last value.
    model->vocab_.insert_or_assign(token, id.get<int32_t>());
  }

  const auto merges = config.find("merges");
  if (merges == config.end() || !merges->is_array()) {
    return FieldError(absl::StrCat(field, ".merges"), "expected an array");
  }
  model->merges_.reserve(merges->size());
  for (size_t rank = 0; rank < merges->size(); ++rank) {
    const json& merge = (*merges)[rank];
    const std::string where = absl::StrCat(field, ".merges[", rank, "]");
    std::string left, right;
    if (merge.is_string()) {  // "left right", the format before tokenizers 0.20
      const std::string& s = merge.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return FieldError(where, absl::StrCat("\"", s, "\" is not two tokens split by a space"));
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      return FieldError(where, "expected \"left right\" or [\"left\", \"right\"]");
    }
    const auto l = model->vocab_.find(left);
    const auto r = model->vocab_.find(right);
    const auto m = model->vocab_.find(left + right);
    for (const auto& [it, token] : {std::pair{l, &left}, std::pair{r, &right}}) {
      if (it == model->vocab_.end()) {
        return FieldError(where, absl::StrCat("token \"", *token, "\" is not in the vocabulary"));
      }
    }
    if (m == model->vocab_.end()) {
      return FieldError(
          where, absl::StrCat("merged token \"", left, right, "\" is not in the vocabulary"));
    }
    // A repeated pair keeps its last rank, as in Hugging Face tokenizers.
    model->merges_.insert_or_assign(
        (static_cast<uint64_t>(static_cast<uint32_t>(l->second)) << 32) |
            static_cast<uint32_t>(r->second),
        MergeRule{static_cast<int32_t>(rank), m->second});
  }

  for (int b = 0; b < 256; ++b) {
    std::string token;
    AppendByteLevel(std::string_view(reinterpret_cast<const char*>(&b), 1), &token);
    const auto it = model->vocab_.find(token);
    model->byte_ids_[b] = it == model->vocab_.end() ? -1 : it->second;
  }
  if (const auto it = config.find("unk_token"); it != config.end() && !it->is_null()) {
    if (!it->is_string() || !model->vocab_.contains(it->get<std::string>())) {
      return FieldError(absl::StrCat(field, ".unk_token"),
                        absl::StrCat(it->dump(), " is not a token of the vocabulary"));
    }
    model->unk_id_ = model->vocab_.at(it->get<std::string>());
  }
  model->fuse_unk_ = Flag(config, "fuse_unk");
  model->ignore_merges_ = Flag(config, "ignore_merges");
  if (model->ignore_merges_) {
    for (const auto& [token, id] : model->vocab_) {
      if (std::optional<std::string> bytes = ByteLevelToBytes(token)) {
        model->word_ids_.emplace(*std::move(bytes), id);
      }
    }
  }
  return model;
}

void BpeModel::Encode(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (word.size() == 1 && byte_ids_[static_cast<uint8_t>(word[0])] >= 0) {
    ids->push_back(byte_ids_[static_cast<uint8_t>(word[0])]);
    return;
  }
  if (ignore_merges_) {
    if (const auto it = word_ids_.find(AsAbsl(word)); it != word_ids_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  if (word.size() > kMaxCachedWordBytes) {
    MergeWord(word, ids);
    return;
  }
  const size_t hash = absl::Hash<absl::string_view>()(AsAbsl(word));
  if (cache_->Find(word, hash, ids)) return;
  const size_t first = ids->size();
  MergeWord(word, ids);
  cache_->Insert(word, hash, ids->data() + first, ids->size() - first);
}

void BpeModel::MergeWord(std::string_view word, std::vector<int32_t>* ids) const {
  // Symbols in a doubly linked list over an array; a heap of candidate merges
  // ordered by (rank, position). An entry is stale when its pair has changed
  // since it was pushed: the pair at its position then yields another token
  // (a merged token's length tells its parts apart).
  struct Symbol {
    int32_t id;
    int32_t prev;  // -1: none
    int32_t next;  // -1: none
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  symbols.clear();
  heap.clear();

  for (char c : word) {
    const int32_t id = byte_ids_[static_cast<uint8_t>(c)];
    if (id < 0) {  // a byte with no token of its own
      if (!unk_id_.has_value()) continue;
      if (fuse_unk_ && !symbols.empty() && symbols.back().id == *unk_id_) continue;
      symbols.push_back({*unk_id_, 0, 0, true});
      continue;
    }
    symbols.push_back({id, 0, 0, true});
  }
  const auto n = static_cast<int32_t>(symbols.size());
  for (int32_t i = 0; i < n; ++i) {
    symbols[i].prev = i - 1;
    symbols[i].next = i + 1 < n ? i + 1 : -1;
  }
  const auto push = [&](int32_t pos) {
    const Symbol& s = symbols[pos];
    if (s.next < 0) return;
    if (const std::optional<MergeRule> m = FindMerge(s.id, symbols[s.next].id)) {
      heap.push_back({m->rank, pos, m->id});
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    }
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    const std::optional<MergeRule> m = FindMerge(left.id, right.id);
    if (!m.has_value() || m->id != top.id) continue;  // stale
    left.id = top.id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) push(left.prev);
    push(top.pos);
  }
  for (int32_t i = 0; i >= 0 && i < n; i = symbols[i].next) ids->push_back(symbols[i].id);
  if (symbols.capacity() > kKeptScratchSymbols) {  // one huge word: give the memory back
    symbols = {};
    heap = {};
  }
}

BpeModel::CacheStats BpeModel::cache_stats() const { return cache_->stats(); }

}  // namespace moeserve
