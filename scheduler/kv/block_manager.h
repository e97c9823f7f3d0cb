// KV block accounting for the coordinator: which blocks of one pool of paged
// KV cache (one worker rank's cache) each sequence holds. It never touches KV
// memory; the block ids it hands out travel to the worker in the step plan.
//
// A sequence holds `num_tokens` token slots, ceil(num_tokens / block_size)
// blocks, in token order (its block table). Blocks are reference counted.
//
// Prefix caching (as vLLM's): a FULL block whose KV has been computed is
// registered under a hash of its token ids chained with the hash of the block
// before it, so one hash finds a candidate for the whole prefix up to the
// block's end. The hash only finds; what decides is identity: a registered
// block records its token ids and its PARENT BLOCK (the registered block
// holding the prefix before it, by id and registration generation), and a
// later sequence takes it only after taking that very parent block and only
// if the tokens are equal. So a block is reused exactly when its whole prefix
// is the same tokens, whatever the hash does: two prompts crafted to collide
// (the chained hash is not cryptographic) cannot share KV computed under
// another prefix. A sequence whose block collides with a registered block of
// other content registers nothing past it. A partial last block is never
// registered and never shared: a sequence only writes into blocks that it
// alone holds, so nothing is ever copied on write.
//
// A registered block whose last holder frees it keeps its content and stays
// reusable in an LRU list. Allocation takes never-used or unregistered free
// blocks first and evicts the least recently freed registered block only when
// those run out. Both kinds count as free.
//
// Not thread safe: one engine-loop thread owns it.
#ifndef MOESERVE_SCHEDULER_KV_BLOCK_MANAGER_H_
#define MOESERVE_SCHEDULER_KV_BLOCK_MANAGER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace moeserve::scheduler {

inline constexpr int64_t kDefaultBlockSizeTokens = 64;

// Hash of one full block: its token ids chained with the hash of the block
// before it (0 before the first block).
using BlockHashFn = uint64_t (*)(uint64_t parent_hash, std::span<const int32_t> tokens);
uint64_t ChainedBlockHash(uint64_t parent_hash, std::span<const int32_t> tokens);

// Cumulative counters, for metrics.
struct PrefixCacheStats {
  int64_t queried_tokens = 0;  // tokens looked up by Allocate
  int64_t hit_tokens = 0;      // of those, found in registered blocks and reused
  int64_t evicted_blocks = 0;  // registered free blocks handed to new content
};

class BlockManager {
 public:
  struct Options {
    int64_t num_blocks = 0;                        // ids are [0, num_blocks)
    int64_t block_size = kDefaultBlockSizeTokens;  // tokens per block
    bool enable_prefix_caching = true;
    BlockHashFn block_hash = nullptr;  // test seam; null means ChainedBlockHash
  };

  // InvalidArgument unless 0 < num_blocks <= INT32_MAX and block_size > 0.
  static absl::StatusOr<std::unique_ptr<BlockManager>> Create(const Options& options);

  BlockManager(const BlockManager&) = delete;
  BlockManager& operator=(const BlockManager&) = delete;

  int64_t num_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  int64_t block_size() const { return options_.block_size; }
  bool prefix_caching() const { return options_.enable_prefix_caching; }
  // ceil(num_tokens / block_size).
  int64_t BlocksForTokens(int64_t num_tokens) const;

  // Blocks no sequence holds: unused ones and registered ones kept for reuse.
  int64_t num_free_blocks() const { return static_cast<int64_t>(free_.size()) + lru_size_; }
  // Of those, the registered ones (reusable until evicted).
  int64_t num_cached_free_blocks() const { return lru_size_; }
  // Share of blocks held by at least one sequence, in [0, 1].
  double usage_ratio() const;
  const PrefixCacheStats& prefix_cache_stats() const { return stats_; }

  // Leading tokens of `tokens` whose KV a registered block holds: whole blocks
  // only, and never the last token (its logits are needed to sample the next
  // token, so it must be computed). 0 when prefix caching is off.
  int64_t CachedPrefixTokens(std::span<const int32_t> tokens) const;

  // Free blocks that sequence `id` would take to grow by `num_tokens` slots
  // (0 while they fit in its last block). `id` must be held here.
  int64_t BlocksToAppend(uint64_t id, int64_t num_tokens) const;

  // Starts sequence `id` with slots for the first `num_tokens` of `tokens`: it
  // takes the registered blocks of its cached prefix (CachedPrefixTokens, as
  // far as num_tokens reaches) and fresh blocks for the rest. Returns how many
  // leading tokens are already cached, whose KV need not be computed.
  // All or nothing: ResourceExhausted ("KV cache full") when the free blocks do
  // not suffice; AlreadyExists if `id` is held; InvalidArgument unless
  // 0 < num_tokens <= tokens.size().
  absl::StatusOr<int64_t> Allocate(uint64_t id, std::span<const int32_t> tokens,
                                   int64_t num_tokens);

  // Grows sequence `id` by `num_tokens` slots. All or nothing:
  // ResourceExhausted when the free blocks do not suffice; NotFound if `id` is
  // not held; InvalidArgument if num_tokens is negative.
  absl::Status Append(uint64_t id, int64_t num_tokens);

  // Registers for reuse the full blocks among the first `num_computed_tokens`
  // of `tokens` (the sequence's token ids), whose KV the worker has written.
  // Blocks already registered with the same content stay with their first
  // holder. No-op when prefix caching is off or `id` is not held.
  void CacheComputedBlocks(uint64_t id, std::span<const int32_t> tokens,
                           int64_t num_computed_tokens);

  // Releases every block of `id` within the call; a block no other sequence
  // holds becomes free (a registered one stays reusable). NotFound if `id` is
  // not held.
  absl::Status Free(uint64_t id);

  bool Contains(uint64_t id) const { return seqs_.contains(id); }
  // Token slots and blocks (in token order) of `id`; 0 and empty if not held.
  // The reference is valid until the next call that changes `id`.
  int64_t num_tokens(uint64_t id) const;
  const std::vector<int32_t>& block_table(uint64_t id) const;
  int64_t num_sequences() const { return static_cast<int64_t>(seqs_.size()); }

  // Checks every internal invariant, O(num_blocks + blocks held); for tests
  // and debugging. Among them: reference counts equal the number of tables
  // holding each block, a block held twice is a registered full block, and a
  // block is free exactly when no sequence holds it.
  absl::Status CheckConsistency() const;

 private:
  // A registered block's identity: its id and how many times it has been
  // registered (so that a child of evicted content never matches the
  // block's next content). {-1, 0}: no parent (the first block).
  struct BlockRef {
    int32_t block = -1;
    uint32_t generation = 0;
    bool operator==(const BlockRef&) const = default;
  };
  struct Block {
    int32_t ref_count = 0;
    bool registered = false;  // cached_ maps `hash` to this block
    uint32_t generation = 0;  // registrations so far
    uint64_t hash = 0;        // chained hash, while registered
    BlockRef parent;          // the registered block before it, while registered
    int32_t lru_prev = -1;     // neighbours in the LRU while registered and free
    int32_t lru_next = -1;
  };
  struct SeqBlocks {
    std::vector<int32_t> table;     // block ids in token order
    int64_t num_tokens = 0;         // token slots held
    int64_t num_hashed_blocks = 0;  // leading blocks whose chained hash is known
    uint64_t last_hash = 0;         // hash of block num_hashed_blocks - 1, 0 if none
    // The registered block holding the same prefix as block
    // num_hashed_blocks - 1 (this sequence's own or an equal one).
    BlockRef last_ref;
    bool collided = false;  // a block collided with other content: register no more
  };
  struct PrefixMatch {
    std::vector<int32_t> blocks;  // registered blocks of the cached prefix
    uint64_t last_hash = 0;       // chained hash of the last of them
    BlockRef last_ref;            // the last of them
  };

  explicit BlockManager(const Options& options);

  PrefixMatch MatchPrefix(std::span<const int32_t> tokens, int64_t max_blocks) const;
  std::span<const int32_t> TokensOf(int32_t block) const;
  int32_t TakeFreeBlock();  // caller checked num_free_blocks() > 0
  void Release(int32_t block);
  void LruPushBack(int32_t block);
  void LruUnlink(int32_t block);
  void Register(int32_t block, uint64_t hash, BlockRef parent, std::span<const int32_t> tokens);
  BlockRef RefOf(int32_t block) const {
    return {block, blocks_[static_cast<size_t>(block)].generation};
  }

  Options options_;
  std::vector<Block> blocks_;
  std::vector<int32_t> free_;  // unregistered free blocks, a stack (lowest id on top at start)
  int32_t lru_head_ = -1;      // registered free block to evict first
  int32_t lru_tail_ = -1;      // most recently freed registered block
  int64_t lru_size_ = 0;       // registered free blocks
  std::vector<int32_t> block_tokens_;              // token ids of registered blocks
  absl::flat_hash_map<uint64_t, int32_t> cached_;  // chained hash -> registered block
  absl::flat_hash_map<uint64_t, SeqBlocks> seqs_;  // sequence id -> its blocks
  PrefixCacheStats stats_;
};

}  // namespace moeserve::scheduler

#endif  // MOESERVE_SCHEDULER_KV_BLOCK_MANAGER_H_
