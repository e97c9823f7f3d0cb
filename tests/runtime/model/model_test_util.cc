#include "tests/runtime/model/model_test_util.h"

#include <unistd.h>

#include <filesystem>
#include <vector>

#include "gtest/gtest.h"
#include "tools/tiny_model/tiny_model.h"

namespace moeserve::testing {

LoadedModel LoadForTest(const std::string& dir, const ModelOptions& options, int64_t cache_blocks,
                        int64_t block_size, KvCacheDtype kv_dtype,
                        std::unique_ptr<Backend> backend) {
  LoadedModel m;
  m.ops = CreateCpuOps();
  if (backend == nullptr) {
    CpuBackendOptions backend_options;
    backend_options.poison_allocations = true;
    backend = CreateCpuBackend(backend_options);
  }
  m.backend = std::move(backend);
  auto checkpoint = Checkpoint::Open(dir);
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
  if (!checkpoint.ok()) return m;
  m.checkpoint = *std::move(checkpoint);
  auto model = LoadModel(*m.checkpoint, WeightSelection{}, *m.backend, options);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return m;
  m.model = *std::move(model);
  PagedKvCache::Options co;
  co.num_layers = m.model->config().num_hidden_layers;
  co.num_blocks = cache_blocks;
  co.block_size = block_size;
  co.set_row(m.model->config().kv_cache_row(kv_dtype));
  auto cache = PagedKvCache::Create(co, m.backend.get());
  EXPECT_TRUE(cache.ok()) << cache.status();
  m.cache = *std::move(cache);
  m.blocks = std::make_unique<BlockAllocator>(cache_blocks);
  return m;
}

std::vector<std::vector<float>> FeedChunks(LoadedModel& m, std::vector<TestSequence*> seqs,
                                           const std::vector<std::vector<int32_t>>& chunks,
                                           int64_t group_max_tokens) {
  ForwardBatch batch;
  batch.group_max_tokens = group_max_tokens;
  const int64_t bs = m.cache->options().block_size;
  for (size_t i = 0; i < seqs.size(); ++i) {
    TestSequence& s = *seqs[i];
    const auto n = static_cast<int64_t>(chunks[i].size());
    while (static_cast<int64_t>(s.blocks.size()) * bs < s.cached + n) {
      auto b = m.blocks->Allocate();
      EXPECT_TRUE(b.ok()) << b.status();
      s.blocks.push_back(*b);
    }
    SeqSlice slice;
    slice.token_begin = static_cast<int64_t>(batch.tokens.size());
    slice.num_tokens = n;
    slice.context_len = s.cached + n;
    slice.block_table = s.blocks;
    for (int64_t j = 0; j < n; ++j) batch.logit_rows.push_back(slice.token_begin + j);
    batch.seqs.push_back(slice);
    batch.tokens.insert(batch.tokens.end(), chunks[i].begin(), chunks[i].end());
  }
  auto logits = m.model->Forward(batch, *m.cache);
  EXPECT_TRUE(logits.ok()) << logits.status();
  std::vector<std::vector<float>> out(seqs.size());
  if (!logits.ok()) return out;
  m.ops->LogSoftmax(logits->mat(), logits->mat());
  const int64_t vocab = logits->dim(1);
  int64_t row = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const auto n = static_cast<int64_t>(chunks[i].size());
    out[i].assign(logits->f32() + row * vocab, logits->f32() + (row + n) * vocab);
    row += n;
    seqs[i]->cached += n;
  }
  return out;
}

std::vector<float> RunChunked(LoadedModel& m, const std::vector<int32_t>& tokens, int64_t chunk) {
  TestSequence seq;
  std::vector<float> all;
  for (size_t begin = 0; begin < tokens.size(); begin += static_cast<size_t>(chunk)) {
    const size_t end = std::min(tokens.size(), begin + static_cast<size_t>(chunk));
    std::vector<int32_t> piece(tokens.begin() + static_cast<std::ptrdiff_t>(begin),
                               tokens.begin() + static_cast<std::ptrdiff_t>(end));
    auto rows = FeedChunks(m, {&seq}, {piece});
    all.insert(all.end(), rows[0].begin(), rows[0].end());
  }
  for (int32_t b : seq.blocks) m.blocks->Free(b);
  return all;
}

std::string MakeTinyForTest(const std::string& arch, const std::string& dtype, uint64_t seed) {
  // Named by process: ctest runs tests side by side, and one process
  // rewriting a model another has mapped crashes the other. Removed when the
  // process exits (each holds tens of MB of embeddings).
  struct Dirs {
    std::vector<std::string> made;
    pid_t owner = getpid();  // a forked child exiting leaves them alone
    ~Dirs() {
      if (getpid() != owner) return;
      for (const std::string& d : made) std::filesystem::remove_all(d);
    }
  };
  static Dirs dirs;
  const std::string dir = ::testing::TempDir() + "/tiny_" + arch + "_" + dtype + "_" +
                          std::to_string(seed) + "_" + std::to_string(getpid()) + "_" +
                          std::to_string(dirs.made.size());
  dirs.made.push_back(dir);
  std::filesystem::remove_all(dir);
  TinyModelOptions o;
  auto a = ParseTinyArch(arch);
  auto d = ParseTinyDtype(dtype);
  EXPECT_TRUE(a.ok() && d.ok());
  o.arch = *a;
  o.dtype = *d;
  o.out_dir = dir;
  o.seed = seed;
  absl::Status s = MakeTinyModel(o);
  EXPECT_TRUE(s.ok()) << s;
  return dir;
}

}  // namespace moeserve::testing
