#include "scheduler/kv/block_manager.h"

#include <numeric>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moeserve::scheduler {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int64_t kBs = 4;  // small blocks keep the tables readable

std::unique_ptr<BlockManager> Make(int64_t num_blocks, bool prefix_caching = true,
                                   BlockHashFn hash = nullptr) {
  BlockManager::Options o;
  o.num_blocks = num_blocks;
  o.block_size = kBs;
  o.enable_prefix_caching = prefix_caching;
  o.block_hash = hash;
  auto m = BlockManager::Create(o);
  EXPECT_TRUE(m.ok()) << m.status();
  return *std::move(m);
}

std::vector<int32_t> Iota(int64_t n, int32_t first = 100) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), first);
  return v;
}

// Allocates `tokens` whole for `id`, as computed, and registers its full blocks.
void Compute(BlockManager& m, uint64_t id, const std::vector<int32_t>& tokens) {
  ASSERT_TRUE(m.Allocate(id, tokens, static_cast<int64_t>(tokens.size())).ok());
  m.CacheComputedBlocks(id, tokens, static_cast<int64_t>(tokens.size()));
}

TEST(BlockManagerTest, CreateRejectsBadOptions) {
  BlockManager::Options o;
  o.num_blocks = 0;
  EXPECT_THAT(BlockManager::Create(o).status().message(), HasSubstr("got 0"));
  o.num_blocks = int64_t{1} << 40;
  EXPECT_EQ(BlockManager::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.num_blocks = 8;
  o.block_size = 0;
  EXPECT_THAT(BlockManager::Create(o).status().message(), HasSubstr("block size"));
}

TEST(BlockManagerTest, BlocksForTokensRoundsUp) {
  auto m = Make(8);
  EXPECT_EQ(m->BlocksForTokens(0), 0);
  EXPECT_EQ(m->BlocksForTokens(1), 1);
  EXPECT_EQ(m->BlocksForTokens(4), 1);
  EXPECT_EQ(m->BlocksForTokens(5), 2);
}

TEST(BlockManagerTest, AllocateHandsOutLowestIdsFirstAndCountsUsage) {
  auto m = Make(10);
  EXPECT_EQ(m->num_free_blocks(), 10);
  EXPECT_EQ(m->usage_ratio(), 0.0);
  auto hits = m->Allocate(7, Iota(9), 9);
  ASSERT_TRUE(hits.ok()) << hits.status();
  EXPECT_EQ(*hits, 0);
  EXPECT_THAT(m->block_table(7), ElementsAre(0, 1, 2));
  EXPECT_EQ(m->num_tokens(7), 9);
  EXPECT_EQ(m->num_free_blocks(), 7);
  EXPECT_DOUBLE_EQ(m->usage_ratio(), 0.3);
  // Slots may be fewer than the known tokens (a prefill chunk).
  ASSERT_TRUE(m->Allocate(8, Iota(9), 2).ok());
  EXPECT_THAT(m->block_table(8), ElementsAre(3));
  EXPECT_TRUE(m->CheckConsistency().ok()) << m->CheckConsistency();
}

TEST(BlockManagerTest, AppendTakesBlocksOnlyAcrossBlockBoundaries) {
  auto m = Make(10);
  ASSERT_TRUE(m->Allocate(1, Iota(3), 3).ok());
  EXPECT_EQ(m->BlocksToAppend(1, 1), 0);
  EXPECT_EQ(m->BlocksToAppend(1, 2), 1);
  EXPECT_EQ(m->BlocksToAppend(1, 10), 3);
  ASSERT_TRUE(m->Append(1, 1).ok());
  EXPECT_EQ(m->block_table(1).size(), 1u);
  ASSERT_TRUE(m->Append(1, 1).ok());
  EXPECT_EQ(m->block_table(1).size(), 2u);
  EXPECT_EQ(m->num_tokens(1), 5);
  ASSERT_TRUE(m->Append(1, 0).ok());
  EXPECT_EQ(m->num_free_blocks(), 8);
}

TEST(BlockManagerTest, CannotOverAllocateAndFailureChangesNothing) {
  auto m = Make(4);
  ASSERT_TRUE(m->Allocate(1, Iota(12), 12).ok());  // 3 blocks
  auto too_many = m->Allocate(2, Iota(8), 8);      // needs 2, 1 left
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(too_many.status().message(), HasSubstr("KV cache full"));
  EXPECT_FALSE(m->Contains(2));
  EXPECT_EQ(m->num_free_blocks(), 1);
  EXPECT_EQ(m->Append(1, 5).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(m->num_tokens(1), 12);
  EXPECT_EQ(m->block_table(1).size(), 3u);
  ASSERT_TRUE(m->Append(1, 4).ok());  // exactly the last block
  EXPECT_EQ(m->num_free_blocks(), 0);
  EXPECT_EQ(m->Append(1, 1).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(m->CheckConsistency().ok()) << m->CheckConsistency();
}

TEST(BlockManagerTest, RejectsBadCalls) {
  auto m = Make(4);
  EXPECT_EQ(m->Allocate(1, Iota(4), 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m->Allocate(1, Iota(4), 5).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(m->Allocate(1, Iota(4), 4).ok());
  EXPECT_EQ(m->Allocate(1, Iota(4), 4).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(m->Append(1, -1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m->Append(2, 1).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m->Free(2).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m->num_free_blocks(), 3);
}

TEST(BlockManagerTest, FreeReturnsEveryBlockWithinTheCall) {
  auto m = Make(12);
  Compute(*m, 1, Iota(10));
  ASSERT_TRUE(m->Allocate(2, Iota(10), 9).ok());  // shares 2 blocks with 1
  ASSERT_TRUE(m->Allocate(3, Iota(7, 500), 7).ok());
  EXPECT_EQ(m->num_free_blocks(), 12 - 3 - 1 - 2);
  ASSERT_TRUE(m->Free(2).ok());
  EXPECT_EQ(m->num_free_blocks(), 12 - 3 - 2);  // the shared blocks stay with 1
  ASSERT_TRUE(m->Free(1).ok());
  ASSERT_TRUE(m->Free(3).ok());
  EXPECT_EQ(m->num_free_blocks(), 12);
  EXPECT_EQ(m->usage_ratio(), 0.0);
  EXPECT_EQ(m->num_sequences(), 0);
  EXPECT_TRUE(m->block_table(1).empty());
  EXPECT_EQ(m->Free(1).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(m->CheckConsistency().ok()) << m->CheckConsistency();
}

TEST(BlockManagerTest, ReusesComputedFullBlocksOfACommonPrefix) {
  auto m = Make(12);
  Compute(*m, 1, Iota(10));  // blocks 0 1 full, 2 partial
  std::vector<int32_t> other = Iota(8);
  other.push_back(7);
  other.push_back(8);
  other.push_back(9);
  EXPECT_EQ(m->CachedPrefixTokens(other), 8);
  auto hits = m->Allocate(2, other, 11);
  ASSERT_TRUE(hits.ok());
  EXPECT_EQ(*hits, 8);
  EXPECT_THAT(m->block_table(2), ElementsAre(0, 1, 3));
  EXPECT_EQ(m->num_free_blocks(), 12 - 4);
  EXPECT_EQ(m->prefix_cache_stats().hit_tokens, 8);
  EXPECT_EQ(m->prefix_cache_stats().queried_tokens, 10 + 11);
  EXPECT_TRUE(m->CheckConsistency().ok()) << m->CheckConsistency();
}

TEST(BlockManagerTest, NeverSharesThePartialLastBlock) {
  auto m = Make(12);
  Compute(*m, 1, Iota(10));
  // Same 10 tokens and more: the third block of 1 holds only 2 of them.
  EXPECT_EQ(m->CachedPrefixTokens(Iota(14)), 8);
  ASSERT_TRUE(m->Allocate(2, Iota(14), 14).ok());
  EXPECT_THAT(m->block_table(2), ElementsAre(0, 1, 3, 4));
  // Once 1 has computed its third block in full, it becomes shareable.
  ASSERT_TRUE(m->Append(1, 2).ok());
  m->CacheComputedBlocks(1, Iota(12), 12);
  EXPECT_EQ(m->CachedPrefixTokens(Iota(14)), 12);
}

TEST(BlockManagerTest, NeverCountsTheLastTokenAsCached) {
  auto m = Make(12);
  Compute(*m, 1, Iota(8));  // two full blocks
  EXPECT_EQ(m->CachedPrefixTokens(Iota(8)), 4);
  EXPECT_EQ(m->CachedPrefixTokens(Iota(9)), 8);
  EXPECT_EQ(m->CachedPrefixTokens({}), 0);
}

TEST(BlockManagerTest, OnlyComputedBlocksAreShared) {
  auto m = Make(12);
  ASSERT_TRUE(m->Allocate(1, Iota(12), 12).ok());
  EXPECT_EQ(m->CachedPrefixTokens(Iota(12)), 0);
  m->CacheComputedBlocks(1, Iota(12), 5);  // one full block computed so far
  EXPECT_EQ(m->CachedPrefixTokens(Iota(12)), 4);
}

TEST(BlockManagerTest, AMismatchEndsTheMatchEvenIfLaterBlocksAgree) {
  auto m = Make(12);
  Compute(*m, 1, Iota(13));
  std::vector<int32_t> tokens = Iota(13);
  tokens[5] = -1;  // second block differs; the third is the same
  EXPECT_EQ(m->CachedPrefixTokens(tokens), 4);
  tokens[0] = -1;
  EXPECT_EQ(m->CachedPrefixTokens(tokens), 0);
}

TEST(BlockManagerTest, ComparesTokensSoHashCollisionsCannotHit) {
  auto m = Make(12, true, [](uint64_t, std::span<const int32_t>) -> uint64_t { return 42; });
  Compute(*m, 1, Iota(5));
  EXPECT_EQ(m->CachedPrefixTokens(Iota(5, 7)), 0);  // same hash, other tokens
  EXPECT_EQ(m->CachedPrefixTokens(Iota(5)), 4);
  // Its first block repeated: the second block finds the registered block
  // under the same hash with the same tokens, but after another parent.
  std::vector<int32_t> tokens = Iota(4);
  tokens.insert(tokens.end(), tokens.begin(), tokens.end());
  tokens.push_back(0);
  EXPECT_EQ(m->CachedPrefixTokens(tokens), 4);
  EXPECT_TRUE(m->CheckConsistency().ok()) << m->CheckConsistency();
}

// Cross-request KV poisoning through a forced hash collision. With a hash
// that sees only the parent's hash and a block's first token, an attacker's
// first block {1, 9, 9, 9} collides with a victim's {1, 2, 3, 4}. The
// attacker's second block {5, 6, 7, 8} (KV computed after {1, 9, 9, 9}) has
// the same hash and tokens as the victim's second block and, keyed by the
// parent's hash alone, would be handed to the victim. Keyed by the parent
// block, it is not even registered, and the victim reuses only its own first
// block.
TEST(BlockManagerTest, ACollidingPrefixSharesNoKvWithAnotherPrompt) {
  auto weak = [](uint64_t parent, std::span<const int32_t> tokens) -> uint64_t {
    return parent * 31 + static_cast<uint64_t>(tokens[0]);
  };
  auto m = Make(16, true, weak);
  Compute(*m, 1, {1, 2, 3, 4, 0});  // the victim's first block, registered
  const std::vector<int32_t> attacker = {1, 9, 9, 9, 5, 6, 7, 8, 0};
  Compute(*m, 2, attacker);
  const int32_t attacker_second = m->block_table(2)[1];
  const std::vector<int32_t> victim = {1, 2, 3, 4, 5, 6, 7, 8, 0};
  EXPECT_EQ(m->CachedPrefixTokens(victim), 4);
  auto hits = m->Allocate(3, victim, static_cast<int64_t>(victim.size()));
  ASSERT_TRUE(hits.ok()) << hits.status();
  EXPECT_EQ(*hits, 4);
  EXPECT_EQ(m->block_table(3)[0], m->block_table(1)[0]);
  EXPECT_NE(m->block_table(3)[1], attacker_second);
  // The victim's own second block is registered under it and shared from
  // now on by prompts with the victim's prefix.
  m->CacheComputedBlocks(3, victim, static_cast<int64_t>(victim.size()));
  EXPECT_EQ(m->CachedPrefixTokens(victim), 8);
  EXPECT_EQ(m->CachedPrefixTokens(attacker), 0);  // the attacker's blocks: not registered
  EXPECT_TRUE(m->CheckConsistency().ok()) << m->CheckConsistency();
}

TEST(BlockManagerTest, ChainedHashDependsOnParentAndOrder) {
  const std::vector<int32_t> a = {1, 2, 3, 4};
  const std::vector<int32_t> b = {2, 1, 3, 4};
  EXPECT_NE(ChainedBlockHash(0, a), ChainedBlockHash(0, b));
  EXPECT_NE(ChainedBlockHash(0, a), ChainedBlockHash(1, a));
  EXPECT_EQ(ChainedBlockHash(5, a), ChainedBlockHash(5, a));
}

TEST(BlockManagerTest, FreedComputedBlocksStayReusable) {
  auto m = Make(12);
  Compute(*m, 1, Iota(10));
  ASSERT_TRUE(m->Free(1).ok());
  EXPECT_EQ(m->num_free_blocks(), 12);
  EXPECT_EQ(m->num_cached_free_blocks(), 2);
  EXPECT_EQ(m->usage_ratio(), 0.0);
  auto hits = m->Allocate(2, Iota(10), 10);
  ASSERT_TRUE(hits.ok());
  EXPECT_EQ(*hits, 8);
  EXPECT_EQ(m->block_table(2)[0], 0);
  EXPECT_EQ(m->block_table(2)[1], 1);
  EXPECT_EQ(m->num_cached_free_blocks(), 0);
  EXPECT_EQ(m->num_free_blocks(), 12 - 3);
  EXPECT_TRUE(m->CheckConsistency().ok()) << m->CheckConsistency();
}

TEST(BlockManagerTest, EvictsOnlyWhenUnregisteredBlocksRunOut) {
  auto m = Make(4);
  Compute(*m, 1, Iota(9));  // blocks 0 1 registered, 2 partial
  ASSERT_TRUE(m->Free(1).ok());
  ASSERT_TRUE(m->Allocate(2, Iota(8, 500), 8).ok());  // takes 2 and 3, never used
  EXPECT_THAT(m->block_table(2), ElementsAre(2, 3));
  EXPECT_EQ(m->prefix_cache_stats().evicted_blocks, 0);
  EXPECT_EQ(m->CachedPrefixTokens(Iota(9)), 8);
  ASSERT_TRUE(m->Append(2, 1).ok());  // now one registered block must go
  EXPECT_EQ(m->prefix_cache_stats().evicted_blocks, 1);
  EXPECT_EQ(m->num_cached_free_blocks(), 1);
  EXPECT_TRUE(m->CheckConsistency().ok()) << m->CheckConsistency();
}

TEST(BlockManagerTest, EvictsTheLeastRecentlyFreedFirstAndASequencesTailFirst) {
  auto m = Make(6);
  Compute(*m, 1, Iota(9));       // 0 1 registered, 2 partial
  Compute(*m, 2, Iota(5, 500));  // 3 registered, 4 partial
  ASSERT_TRUE(m->Free(1).ok());
  ASSERT_TRUE(m->Free(2).ok());
  // Unregistered free blocks first: 4, 2, 5; then the LRU: 1 (the tail of
  // sequence 1), 0, then 3.
  ASSERT_TRUE(m->Allocate(3, Iota(12, 900), 12).ok());
  EXPECT_EQ(m->prefix_cache_stats().evicted_blocks, 0);
  ASSERT_TRUE(m->Append(3, 4).ok());
  EXPECT_EQ(m->prefix_cache_stats().evicted_blocks, 1);
  EXPECT_EQ(m->CachedPrefixTokens(Iota(9)), 4);       // block 0 survives
  EXPECT_EQ(m->CachedPrefixTokens(Iota(5, 500)), 4);  // so does block 3
  ASSERT_TRUE(m->Append(3, 4).ok());
  EXPECT_EQ(m->CachedPrefixTokens(Iota(9)), 0);
  EXPECT_EQ(m->CachedPrefixTokens(Iota(5, 500)), 4);
  ASSERT_TRUE(m->Append(3, 4).ok());
  EXPECT_EQ(m->CachedPrefixTokens(Iota(5, 500)), 0);
  EXPECT_EQ(m->num_free_blocks(), 0);
  EXPECT_TRUE(m->CheckConsistency().ok()) << m->CheckConsistency();
}

TEST(BlockManagerTest, AReusedBlockIsTakenOffTheLruAndNotEvicted) {
  auto m = Make(4);
  Compute(*m, 1, Iota(9));
  ASSERT_TRUE(m->Free(1).ok());
  ASSERT_TRUE(m->Allocate(2, Iota(9), 5).ok());  // reuses block 0, takes one fresh
  EXPECT_EQ(m->block_table(2)[0], 0);
  ASSERT_TRUE(m->Allocate(3, Iota(8, 500), 8).ok());  // the other fresh one, then evicts 1
  EXPECT_EQ(m->num_free_blocks(), 0);
  EXPECT_EQ(m->block_table(2)[0], 0);
  EXPECT_THAT(m->block_table(3), ::testing::Contains(1));
  EXPECT_TRUE(m->CheckConsistency().ok()) << m->CheckConsistency();
}

TEST(BlockManagerTest, FreeCachedHitsCountTowardTheNeedAndAreNotEvictedForIt) {
  auto m = Make(3);
  Compute(*m, 1, Iota(9));
  ASSERT_TRUE(m->Free(1).ok());  // free: block 2; LRU: 1, 0
  // 2 hits + 2 fresh = 4 > 3: refused, the cache kept.
  EXPECT_EQ(m->Allocate(2, Iota(16), 16).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(m->CachedPrefixTokens(Iota(9)), 8);
  EXPECT_EQ(m->num_free_blocks(), 3);
  // 2 hits + 1 fresh fits exactly.
  auto hits = m->Allocate(2, Iota(12), 12);
  ASSERT_TRUE(hits.ok()) << hits.status();
  EXPECT_EQ(*hits, 8);
  EXPECT_THAT(m->block_table(2), ElementsAre(0, 1, 2));
  EXPECT_EQ(m->prefix_cache_stats().evicted_blocks, 0);
}

TEST(BlockManagerTest, IdenticalBlocksComputedTwiceRegisterOnce) {
  auto m = Make(8);
  ASSERT_TRUE(m->Allocate(1, Iota(5), 5).ok());
  ASSERT_TRUE(m->Allocate(2, Iota(5), 5).ok());  // nothing computed yet: no hit
  EXPECT_THAT(m->block_table(2), ElementsAre(2, 3));
  m->CacheComputedBlocks(1, Iota(5), 5);
  m->CacheComputedBlocks(2, Iota(5), 5);
  ASSERT_TRUE(m->Free(2).ok());
  EXPECT_EQ(m->num_cached_free_blocks(), 0);  // 2's copy was never registered
  ASSERT_TRUE(m->Free(1).ok());
  EXPECT_EQ(m->num_cached_free_blocks(), 1);
  EXPECT_TRUE(m->CheckConsistency().ok()) << m->CheckConsistency();
}

TEST(BlockManagerTest, WithoutPrefixCachingNothingIsShared) {
  auto m = Make(8, /*prefix_caching=*/false);
  Compute(*m, 1, Iota(9));
  EXPECT_EQ(m->CachedPrefixTokens(Iota(9)), 0);
  auto hits = m->Allocate(2, Iota(9), 9);
  ASSERT_TRUE(hits.ok());
  EXPECT_EQ(*hits, 0);
  ASSERT_TRUE(m->Free(1).ok());
  EXPECT_EQ(m->num_cached_free_blocks(), 0);
  EXPECT_EQ(m->prefix_cache_stats().queried_tokens, 0);
  EXPECT_TRUE(m->CheckConsistency().ok()) << m->CheckConsistency();
}

TEST(BlockManagerTest, RandomOperationsKeepEveryInvariant) {
  auto m = Make(24);
  std::mt19937 rng(7);
  std::vector<uint64_t> live;
  uint64_t next_id = 0;
  for (int i = 0; i < 3000; ++i) {
    const int op = static_cast<int>(rng() % 3);
    if (op == 0) {
      // Prompts from 3 shared prefixes so that blocks get reused.
      const auto len = static_cast<int64_t>(1 + rng() % 14);
      std::vector<int32_t> tokens = Iota(len, static_cast<int32_t>(1000 * (rng() % 3)));
      auto hits = m->Allocate(next_id, tokens, len);
      if (hits.ok()) {
        m->CacheComputedBlocks(next_id, tokens, len);
        live.push_back(next_id);
      } else {
        ASSERT_EQ(hits.status().code(), absl::StatusCode::kResourceExhausted);
      }
      ++next_id;
    } else if (op == 1 && !live.empty()) {
      const absl::Status s = m->Append(live[rng() % live.size()], 1 + rng() % 5);
      ASSERT_TRUE(s.ok() || absl::IsResourceExhausted(s)) << s;
    } else if (!live.empty()) {
      const size_t k = rng() % live.size();
      ASSERT_TRUE(m->Free(live[k]).ok());
      live.erase(live.begin() + static_cast<int64_t>(k));
    }
    ASSERT_TRUE(m->CheckConsistency().ok()) << "op " << i << ": " << m->CheckConsistency();
  }
  EXPECT_GT(m->prefix_cache_stats().hit_tokens, 0);
  EXPECT_GT(m->prefix_cache_stats().evicted_blocks, 0);
  for (uint64_t id : live) ASSERT_TRUE(m->Free(id).ok());
  EXPECT_EQ(m->num_free_blocks(), 24);
}

}  // namespace
}  // namespace moeserve::scheduler
