// Paged KV cache memory and the free list of its blocks.
//
// Memory is one byte buffer per layer of num_blocks x block_size token rows,
// each row `width` logical values (for MLA the normalized 512-wide latent
// plus the 64-wide rope key, 576 for DeepSeek-V3, never per-head K/V; for GQA
// the keys and values of every KV head) stored in the cache dtype by the row
// layout of kernels/kv_cache_layout.h. Per token and layer, DeepSeek-V3:
// fp32 2,304 bytes, bf16 1,152, fp8 656.
#ifndef MOESERVE_RUNTIME_KV_CACHE_PAGED_KV_CACHE_H_
#define MOESERVE_RUNTIME_KV_CACHE_PAGED_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/ops.h"

namespace moeserve {

inline constexpr int64_t kDefaultKvBlockTokens = 64;

class PagedKvCache {
 public:
  struct Options {
    int64_t num_layers = 0;
    int64_t num_blocks = 0;
    int64_t block_size = kDefaultKvBlockTokens;  // tokens per block
    int64_t width = 0;                           // logical values per token and layer
    KvCacheDtype dtype = KvCacheDtype::kF32;
    // FP8 only (ModelConfig::kv_cache_row gives them): the leading columns
    // quantized to e4m3 (the rest stay bf16) and the values per scale.
    int64_t quantized_cols = 0;
    int64_t quant_tile = 0;

    KvRowLayout row() const { return {dtype, width, quantized_cols, quant_tile}; }
    void set_row(const KvRowLayout& r) {
      width = r.width;
      dtype = r.dtype;
      quantized_cols = r.quantized_cols;
      quant_tile = r.tile;
    }
  };
  // Fails if a dimension is not positive, the FP8 split does not fit the
  // width, or the cache would not fit in memory. The memory is `backend`'s
  // (zeroed before Create returns), or host memory when it is null.
  static absl::StatusOr<std::unique_ptr<PagedKvCache>> Create(const Options& options,
                                                              Backend* backend = nullptr);

  PagedCacheView layer(int64_t index);
  const Options& options() const { return options_; }
  // The bytes the cache holds: layers x blocks x block_size x row bytes.
  int64_t capacity_bytes() const;
  int64_t row_bytes() const { return options_.row().row_bytes(); }

 private:
  explicit PagedKvCache(const Options& options) : options_(options) {}
  Options options_;
  std::vector<std::shared_ptr<std::byte[]>> layers_;  // num_blocks * block_size rows each, zeroed
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
