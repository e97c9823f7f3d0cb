// Paged KV cache memory and the free list of its blocks.
//
// Memory is one buffer per layer of num_blocks x block_size token rows, each
// row kv_cache_width floats: for MLA the normalized 512-wide latent plus the
// 64-wide rope key (576 floats for DeepSeek-V3), never per-head K/V; for GQA
// the keys and values of every KV head.
#ifndef MOESERVE_RUNTIME_KV_CACHE_PAGED_KV_CACHE_H_
#define MOESERVE_RUNTIME_KV_CACHE_PAGED_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/ops.h"

namespace moeserve {

inline constexpr int64_t kDefaultKvBlockTokens = 64;

class PagedKvCache {
 public:
  struct Options {
    int64_t num_layers = 0;
    int64_t num_blocks = 0;
    int64_t block_size = kDefaultKvBlockTokens;  // tokens per block
    int64_t width = 0;                           // floats per token and layer
  };
  // Fails if a dimension is not positive or the cache would not fit in memory.
  static absl::StatusOr<std::unique_ptr<PagedKvCache>> Create(const Options& options);

  PagedCacheView layer(int64_t index);
  const Options& options() const { return options_; }
  int64_t capacity_bytes() const;

 private:
  explicit PagedKvCache(const Options& options) : options_(options) {}
  Options options_;
  std::vector<Tensor> layers_;  // [num_blocks * block_size, width] each
};

// Hands out block ids in [0, num_blocks). Not thread safe.
class BlockAllocator {
 public:
  explicit BlockAllocator(int64_t num_blocks);
  // ResourceExhausted ("KV cache full") when no block is free.
  absl::StatusOr<int32_t> Allocate();
  void Free(int32_t block);
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t num_blocks() const { return num_blocks_; }

 private:
  int64_t num_blocks_;
  std::vector<int32_t> free_;  // a stack: the most recently freed block is reused first
};

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_KV_CACHE_PAGED_KV_CACHE_H_
