#include "runtime/kv_cache/paged_kv_cache.h"

#include <cassert>
#include <cstdint>
#include <new>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moeserve {

absl::StatusOr<std::unique_ptr<PagedKvCache>> PagedKvCache::Create(const Options& options,
                                                                   Backend* backend) {
  if (options.num_layers <= 0 || options.num_blocks <= 0 || options.block_size <= 0 ||
      options.width <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache: layers (", options.num_layers, "), blocks (", options.num_blocks,
                     "), block size (", options.block_size, ") and width (", options.width,
                     ") must all be positive"));
  }
  const KvRowLayout row = options.row();
  if (!row.valid()) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache: ", std::string(KvCacheDtypeName(options.dtype)), " rows of width ",
                     options.width, " need 0 < quantized columns (", options.quantized_cols,
                     ") <= width and a positive tile (", options.quant_tile, ")"));
  }
  const int64_t row_bytes = row.row_bytes();
  if (options.num_blocks > INT64_MAX / options.block_size / row_bytes / options.num_layers) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "KV cache: ", options.num_layers, " layers x ", options.num_blocks, " blocks x ",
        options.block_size, " tokens x ", row_bytes, " bytes overflows"));
  }
  const auto layer_bytes = static_cast<size_t>(options.num_blocks * options.block_size * row_bytes);
  auto cache = std::unique_ptr<PagedKvCache>(new PagedKvCache(options));
  if (backend != nullptr) {
    std::unique_ptr<Stream> stream = backend->CreateStream();
    for (int64_t l = 0; l < options.num_layers; ++l) {
      auto memory = backend->Allocate(layer_bytes);
      if (!memory.ok()) {
        return absl::Status(memory.status().code(),
                            absl::StrCat("KV cache layer ", l, " of ", options.num_layers, ": ",
                                         memory.status().message()));
      }
      stream->Fill(memory->get(), 0, layer_bytes);
      cache->layers_.push_back(*std::move(memory));
    }
    if (absl::Status s = stream->Synchronize(); !s.ok()) return s;
    return cache;
  }
  try {
    for (int64_t l = 0; l < options.num_layers; ++l) {
      cache->layers_.push_back(std::shared_ptr<std::byte[]>(new std::byte[layer_bytes]()));
    }
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache: cannot allocate ", options.num_layers, " layers x ",
                     options.num_blocks, " blocks x ", options.block_size, " tokens x ", row_bytes,
                     " bytes (", std::string(KvCacheDtypeName(options.dtype)), ")"));
  }
  return cache;
}

PagedCacheView PagedKvCache::layer(int64_t index) {
  assert(index >= 0 && index < options_.num_layers);
  return {layers_[static_cast<size_t>(index)].get(),
          options_.num_blocks,
          options_.block_size,
          options_.width,
          options_.dtype,
          options_.quantized_cols,
          options_.quant_tile};
}

int64_t PagedKvCache::capacity_bytes() const {
  return options_.num_layers * options_.num_blocks * options_.block_size * row_bytes();
}

BlockAllocator::BlockAllocator(int64_t num_blocks) : num_blocks_(num_blocks) {
  free_.reserve(static_cast<size_t>(num_blocks));
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

absl::StatusOr<int32_t> BlockAllocator::Allocate() {
  if (free_.empty()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache full: all ", num_blocks_, " blocks are in use"));
  }
  const int32_t b = free_.back();
  free_.pop_back();
  return b;
}

void BlockAllocator::Free(int32_t block) {
  assert(block >= 0 && block < num_blocks_);
  free_.push_back(block);
}

}  // namespace moeserve
