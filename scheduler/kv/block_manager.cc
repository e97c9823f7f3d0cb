#include "scheduler/kv/block_manager.h"

#include <algorithm>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "scheduler/util/invariant.h"

namespace moeserve::scheduler {
namespace {

// splitmix64's finalizer: a fast bijective mix with full avalanche.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t ChainedBlockHash(uint64_t parent_hash, std::span<const int32_t> tokens) {
  uint64_t h = Mix(parent_hash ^ static_cast<uint64_t>(tokens.size()));
  for (int32_t t : tokens) h = Mix(h ^ static_cast<uint32_t>(t));
  return h;
}

absl::StatusOr<std::unique_ptr<BlockManager>> BlockManager::Create(const Options& options) {
  if (options.num_blocks <= 0 || options.num_blocks > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache blocks must be in [1, ",
                                                   std::numeric_limits<int32_t>::max(), "], got ",
                                                   options.num_blocks));
  }
  if (options.block_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV block size must be positive, got ", options.block_size, " tokens"));
  }
  return std::unique_ptr<BlockManager>(new BlockManager(options));
}

BlockManager::BlockManager(const Options& options) : options_(options) {
  if (options_.block_hash == nullptr) options_.block_hash = &ChainedBlockHash;
  blocks_.resize(static_cast<size_t>(options_.num_blocks));
  free_.reserve(blocks_.size());
  // A stack: block 0 is handed out first.
  for (int64_t b = options_.num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
  if (options_.enable_prefix_caching) {
    block_tokens_.resize(static_cast<size_t>(options_.num_blocks * options_.block_size));
  }
}

int64_t BlockManager::BlocksForTokens(int64_t num_tokens) const {
  return (num_tokens + options_.block_size - 1) / options_.block_size;
}

double BlockManager::usage_ratio() const {
  return static_cast<double>(num_blocks() - num_free_blocks()) / static_cast<double>(num_blocks());
}

std::span<const int32_t> BlockManager::TokensOf(int32_t block) const {
  const auto bs = static_cast<size_t>(options_.block_size);
  return std::span<const int32_t>(block_tokens_).subspan(static_cast<size_t>(block) * bs, bs);
}

BlockManager::PrefixMatch BlockManager::MatchPrefix(std::span<const int32_t> tokens,
                                                    int64_t max_blocks) const {
  PrefixMatch match;
  if (!options_.enable_prefix_caching) return match;
  const auto bs = static_cast<size_t>(options_.block_size);
  uint64_t parent = 0;
  BlockRef parent_ref;
  for (int64_t i = 0; i < max_blocks; ++i) {
    std::span<const int32_t> chunk = tokens.subspan(static_cast<size_t>(i) * bs, bs);
    const uint64_t h = options_.block_hash(parent, chunk);
    auto it = cached_.find(h);
    if (it == cached_.end()) break;
    // Its parent must be the block just taken, and its tokens these.
    const Block& block = blocks_[static_cast<size_t>(it->second)];
    if (!(block.parent == parent_ref)) break;
    std::span<const int32_t> held = TokensOf(it->second);
    if (!std::equal(chunk.begin(), chunk.end(), held.begin())) break;
    match.blocks.push_back(it->second);
    parent = h;
    parent_ref = RefOf(it->second);
  }
  match.last_hash = parent;
  match.last_ref = parent_ref;
  return match;
}

int64_t BlockManager::CachedPrefixTokens(std::span<const int32_t> tokens) const {
  if (tokens.empty()) return 0;
  const int64_t max_blocks = (static_cast<int64_t>(tokens.size()) - 1) / options_.block_size;
  return static_cast<int64_t>(MatchPrefix(tokens, max_blocks).blocks.size()) * options_.block_size;
}

int64_t BlockManager::BlocksToAppend(uint64_t id, int64_t num_tokens) const {
  auto it = seqs_.find(id);
  CheckInvariant(it != seqs_.end(), "BlocksToAppend for a sequence that holds no blocks");
  const SeqBlocks& seq = it->second;
  return BlocksForTokens(seq.num_tokens + num_tokens) - static_cast<int64_t>(seq.table.size());
}

absl::StatusOr<int64_t> BlockManager::Allocate(uint64_t id, std::span<const int32_t> tokens,
                                               int64_t num_tokens) {
  if (num_tokens <= 0 || num_tokens > static_cast<int64_t>(tokens.size())) {
    return absl::InvalidArgumentError(absl::StrCat("sequence ", id, ": cannot allocate ",
                                                   num_tokens, " slots for ", tokens.size(),
                                                   " tokens"));
  }
  if (seqs_.contains(id)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", id, " already holds KV blocks"));
  }
  const int64_t reusable_blocks =
      std::min((static_cast<int64_t>(tokens.size()) - 1), num_tokens) / options_.block_size;
  PrefixMatch match = MatchPrefix(tokens, reusable_blocks);
  const auto num_hits = static_cast<int64_t>(match.blocks.size());
  const int64_t hits_now_free =
      std::count_if(match.blocks.begin(), match.blocks.end(),
                    [&](int32_t b) { return blocks_[static_cast<size_t>(b)].ref_count == 0; });
  const int64_t fresh = BlocksForTokens(num_tokens) - num_hits;
  if (fresh + hits_now_free > num_free_blocks()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: sequence ", id, " needs ",
                                                     fresh + hits_now_free, " free blocks, ",
                                                     num_free_blocks(), " left"));
  }
  SeqBlocks& seq = seqs_[id];
  seq.table.reserve(static_cast<size_t>(BlocksForTokens(num_tokens)));
  // Take the hits first: evicting for the fresh blocks must not take them.
  for (int32_t b : match.blocks) {
    Block& block = blocks_[static_cast<size_t>(b)];
    if (block.ref_count == 0) LruUnlink(b);
    ++block.ref_count;
    seq.table.push_back(b);
  }
  for (int64_t i = 0; i < fresh; ++i) seq.table.push_back(TakeFreeBlock());
  seq.num_tokens = num_tokens;
  seq.num_hashed_blocks = num_hits;
  seq.last_hash = match.last_hash;
  seq.last_ref = match.last_ref;
  const int64_t hit_tokens = num_hits * options_.block_size;
  if (options_.enable_prefix_caching) {
    stats_.queried_tokens += static_cast<int64_t>(tokens.size());
    stats_.hit_tokens += hit_tokens;
  }
  return hit_tokens;
}

absl::Status BlockManager::Append(uint64_t id, int64_t num_tokens) {
  if (num_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence ", id, ": cannot append ", num_tokens, " slots"));
  }
  auto it = seqs_.find(id);
  if (it == seqs_.end()) {
    return absl::NotFoundError(absl::StrCat("sequence ", id, " holds no KV blocks"));
  }
  SeqBlocks& seq = it->second;
  const int64_t fresh =
      BlocksForTokens(seq.num_tokens + num_tokens) - static_cast<int64_t>(seq.table.size());
  if (fresh > num_free_blocks()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: sequence ", id, " needs ",
                                                     fresh, " free blocks, ", num_free_blocks(),
                                                     " left"));
  }
  for (int64_t i = 0; i < fresh; ++i) seq.table.push_back(TakeFreeBlock());
  seq.num_tokens += num_tokens;
  return absl::OkStatus();
}

void BlockManager::CacheComputedBlocks(uint64_t id, std::span<const int32_t> tokens,
                                       int64_t num_computed_tokens) {
  if (!options_.enable_prefix_caching) return;
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  SeqBlocks& seq = it->second;
  CheckInvariant(num_computed_tokens <= seq.num_tokens &&
                     num_computed_tokens <= static_cast<int64_t>(tokens.size()),
                 "computed tokens beyond the sequence's slots or tokens");
  const auto bs = static_cast<size_t>(options_.block_size);
  const int64_t full_blocks = num_computed_tokens / options_.block_size;
  for (int64_t i = seq.num_hashed_blocks; i < full_blocks && !seq.collided; ++i) {
    std::span<const int32_t> chunk = tokens.subspan(static_cast<size_t>(i) * bs, bs);
    const uint64_t h = options_.block_hash(seq.last_hash, chunk);
    const int32_t b = seq.table[static_cast<size_t>(i)];
    auto found = cached_.find(h);
    int32_t canonical = -1;  // the registered block holding this very prefix
    if (found == cached_.end()) {
      Register(b, h, seq.last_ref, chunk);
      canonical = b;
    } else {
      const Block& other = blocks_[static_cast<size_t>(found->second)];
      std::span<const int32_t> held = TokensOf(found->second);
      if (other.parent == seq.last_ref && std::equal(chunk.begin(), chunk.end(), held.begin())) {
        canonical = found->second;  // the same prefix, registered by another sequence
      } else {
        seq.collided = true;  // the hash names other content: leave the rest unregistered
        break;
      }
    }
    seq.last_hash = h;
    seq.last_ref = RefOf(canonical);
    seq.num_hashed_blocks = i + 1;
  }
}

absl::Status BlockManager::Free(uint64_t id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) {
    return absl::NotFoundError(absl::StrCat("sequence ", id, " holds no KV blocks"));
  }
  // Tail first, so that a sequence's last blocks are evicted before the
  // prefix blocks that other requests are more likely to share.
  const std::vector<int32_t>& table = it->second.table;
  for (auto b = table.rbegin(); b != table.rend(); ++b) Release(*b);
  seqs_.erase(it);
  return absl::OkStatus();
}

int64_t BlockManager::num_tokens(uint64_t id) const {
  auto it = seqs_.find(id);
  return it == seqs_.end() ? 0 : it->second.num_tokens;
}

const std::vector<int32_t>& BlockManager::block_table(uint64_t id) const {
  static const std::vector<int32_t> kEmpty;
  auto it = seqs_.find(id);
  return it == seqs_.end() ? kEmpty : it->second.table;
}

int32_t BlockManager::TakeFreeBlock() {
  int32_t b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else {
    CheckInvariant(lru_head_ >= 0, "no free KV block although the count said so");
    b = lru_head_;
    LruUnlink(b);
    Block& evicted = blocks_[static_cast<size_t>(b)];
    cached_.erase(evicted.hash);
    evicted.registered = false;
    ++stats_.evicted_blocks;
  }
  blocks_[static_cast<size_t>(b)].ref_count = 1;
  return b;
}

void BlockManager::Release(int32_t b) {
  Block& block = blocks_[static_cast<size_t>(b)];
  CheckInvariant(block.ref_count > 0, "KV block released more often than taken");
  if (--block.ref_count > 0) return;
  if (block.registered) {
    LruPushBack(b);
  } else {
    free_.push_back(b);
  }
}

void BlockManager::LruPushBack(int32_t b) {
  Block& block = blocks_[static_cast<size_t>(b)];
  block.lru_prev = lru_tail_;
  block.lru_next = -1;
  if (lru_tail_ >= 0) {
    blocks_[static_cast<size_t>(lru_tail_)].lru_next = b;
  } else {
    lru_head_ = b;
  }
  lru_tail_ = b;
  ++lru_size_;
}

void BlockManager::LruUnlink(int32_t b) {
  Block& block = blocks_[static_cast<size_t>(b)];
  if (block.lru_prev >= 0) {
    blocks_[static_cast<size_t>(block.lru_prev)].lru_next = block.lru_next;
  } else {
    lru_head_ = block.lru_next;
  }
  if (block.lru_next >= 0) {
    blocks_[static_cast<size_t>(block.lru_next)].lru_prev = block.lru_prev;
  } else {
    lru_tail_ = block.lru_prev;
  }
  block.lru_prev = block.lru_next = -1;
  --lru_size_;
}

void BlockManager::Register(int32_t b, uint64_t hash, BlockRef parent,
                            std::span<const int32_t> tokens) {
  Block& block = blocks_[static_cast<size_t>(b)];
  block.registered = true;
  ++block.generation;
  block.hash = hash;
  block.parent = parent;
  std::copy(tokens.begin(), tokens.end(),
            block_tokens_.begin() + static_cast<int64_t>(b) * options_.block_size);
  cached_[hash] = b;
}

absl::Status BlockManager::CheckConsistency() const {
  std::vector<int32_t> refs(blocks_.size(), 0);
  for (const auto& [id, seq] : seqs_) {
    if (static_cast<int64_t>(seq.table.size()) != BlocksForTokens(seq.num_tokens)) {
      return absl::InternalError(absl::StrCat("sequence ", id, ": ", seq.table.size(),
                                              " blocks for ", seq.num_tokens, " slots"));
    }
    for (int32_t b : seq.table) {
      if (b < 0 || b >= num_blocks()) {
        return absl::InternalError(absl::StrCat("sequence ", id, " holds block ", b));
      }
      ++refs[static_cast<size_t>(b)];
    }
  }
  std::vector<int> on_stack(blocks_.size(), 0);
  std::vector<int> on_lru(blocks_.size(), 0);
  for (int32_t b : free_) ++on_stack[static_cast<size_t>(b)];
  int64_t lru_count = 0;
  for (int32_t b = lru_head_; b >= 0; b = blocks_[static_cast<size_t>(b)].lru_next) {
    ++on_lru[static_cast<size_t>(b)];
    if (++lru_count > num_blocks()) return absl::InternalError("LRU list has a cycle");
  }
  if (lru_count != lru_size_) {
    return absl::InternalError(
        absl::StrCat("LRU list holds ", lru_count, " blocks, counted ", lru_size_));
  }
  int64_t registered = 0;
  for (size_t b = 0; b < blocks_.size(); ++b) {
    const Block& block = blocks_[b];
    const std::string where = absl::StrCat("block ", b, ": ");
    if (block.ref_count != refs[b]) {
      return absl::InternalError(absl::StrCat(where, "reference count ", block.ref_count,
                                              " but held by ", refs[b], " sequences"));
    }
    const int expected_free = refs[b] == 0 ? 1 : 0;
    const int expected_lru = block.registered ? expected_free : 0;
    if (on_stack[b] + on_lru[b] != expected_free || on_lru[b] != expected_lru) {
      return absl::InternalError(absl::StrCat(where, "held by ", refs[b], " sequences, ",
                                              block.registered ? "" : "not ", "registered, ",
                                              on_stack[b], " times on the free stack and ",
                                              on_lru[b], " times on the LRU"));
    }
    if (refs[b] > 1 && !block.registered) {
      return absl::InternalError(where + "shared but not a registered full block");
    }
    if (block.registered) {
      ++registered;
      auto it = cached_.find(block.hash);
      if (it == cached_.end() || it->second != static_cast<int32_t>(b)) {
        return absl::InternalError(where + "registered but not in the hash map");
      }
    }
  }
  if (registered != static_cast<int64_t>(cached_.size())) {
    return absl::InternalError(
        absl::StrCat(registered, " registered blocks, hash map holds ", cached_.size()));
  }
  return absl::OkStatus();
}

}  // namespace moeserve::scheduler
