// Helpers for model tests: load a checkpoint with the CPU op set and run
// prompts through Model::Forward with a private KV cache.
#ifndef MOESERVE_TESTS_RUNTIME_MODEL_MODEL_TEST_UTIL_H_
#define MOESERVE_TESTS_RUNTIME_MODEL_MODEL_TEST_UTIL_H_

#include <memory>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_ops.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/kv_cache/paged_kv_cache.h"
#include "runtime/model/model.h"

namespace moeserve::testing {

struct LoadedModel {
  // The CPU backend, its allocations poisoned with NaN so that a read of
  // memory nothing wrote shows in the results.
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Ops> ops;  // synchronous CPU ops, for work on host logits
  std::unique_ptr<Checkpoint> checkpoint;
  std::unique_ptr<Model> model;
  std::unique_ptr<PagedKvCache> cache;
  std::unique_ptr<BlockAllocator> blocks;
};

// Loads `dir` (asserting success) with a KV cache of `cache_blocks` blocks
// in `kv_dtype`, on `backend` (default: the CPU backend with its
// allocations poisoned).
LoadedModel LoadForTest(const std::string& dir, const ModelOptions& options = {},
                        int64_t cache_blocks = 64, int64_t block_size = kDefaultKvBlockTokens,
                        KvCacheDtype kv_dtype = KvCacheDtype::kF32,
                        std::unique_ptr<Backend> backend = nullptr);

// A sequence being fed through the model in pieces.
struct TestSequence {
  std::vector<int32_t> blocks;
  int64_t cached = 0;
};

// Feeds several sequences' next chunks in one forward pass and returns the
// log-softmax of every new row, per sequence: result[i] is
// [chunks[i].size(), vocab] row-major.
// group_max_tokens: ForwardBatch::group_max_tokens.
std::vector<std::vector<float>> FeedChunks(LoadedModel& m, std::vector<TestSequence*> seqs,
                                           const std::vector<std::vector<int32_t>>& chunks,
                                           int64_t group_max_tokens = 0);

// One sequence, its whole token list in chunks of `chunk` tokens; returns the
// log-softmax rows of all tokens, concatenated.
std::vector<float> RunChunked(LoadedModel& m, const std::vector<int32_t>& tokens, int64_t chunk);

// Writes a tiny checkpoint into a fresh temporary directory and returns it.
std::string MakeTinyForTest(const std::string& arch, const std::string& dtype, uint64_t seed = 0);

}  // namespace moeserve::testing

#endif  // MOESERVE_TESTS_RUNTIME_MODEL_MODEL_TEST_UTIL_H_
