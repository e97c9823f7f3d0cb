// The CUDA op set's paged attention (MLA in both forms, GQA) and cache
// writes against the CPU twin, on ragged batches whose sequences have
// different context lengths and scattered block tables, at the tiny
// fixture's and at DeepSeek-V3's head shapes. Cache slots outside every
// context hold NaN, so reading one poisons the output; output rows of no
// sequence must keep their sentinel. Every test skips without a GPU.
//
// Tolerances, as ||gpu - cpu|| / ||cpu||: with F32 weights both compute the
// same float32 function in another order (blocked dot products, an online
// softmax rescaled per 32 positions, cuBLASLt): ~1e-6, bound 1e-5. With a
// BF16 wkv_b the GPU also rounds q_nope and the attended latent to bf16
// before the per-head products (relative 2^-9 each): bound 1e-2 against the
// CPU fed the same bf16 weights.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tests/kernels/cuda/cuda_test_util.h"

namespace moeserve::testing {
namespace {

constexpr double kF32Tolerance = 1e-5;
constexpr double kBf16Tolerance = 1e-2;
constexpr float kSentinel = 7.0f;

struct Batch {
  int64_t rows = 0;
  int64_t block_size = 0;
  int64_t num_blocks = 0;
  std::vector<std::vector<int32_t>> tables;
  std::vector<SeqSlice> seqs;
};

// Three sequences and a row (3) that belongs to none: a chunked prefill, a
// decode and a fresh prefill.
Batch Ragged() {
  Batch b;
  b.rows = 10;
  b.block_size = 4;
  b.num_blocks = 8;
  b.tables = {{5, 2}, {1, 7}, {3, 0}};
  b.seqs = {{0, 3, 7, b.tables[0]}, {4, 1, 6, b.tables[1]}, {5, 5, 5, b.tables[2]}};
  return b;
}

// `n` decode sequences with long contexts (the kernel splits the context
// across blocks), contiguous rows.
Batch LongDecode(int64_t n, int64_t context) {
  Batch b;
  b.block_size = 64;
  const int64_t blocks = CeilDiv(context, b.block_size);
  b.num_blocks = n * blocks + 3;
  b.rows = n;
  for (int64_t s = 0; s < n; ++s) {
    std::vector<int32_t> t(static_cast<size_t>(blocks));
    for (int64_t i = 0; i < blocks; ++i) {
      t[static_cast<size_t>(i)] = static_cast<int32_t>((s * blocks + i) * 7 % b.num_blocks);
    }
    b.tables.push_back(t);
  }
  for (int64_t s = 0; s < n; ++s) b.seqs.push_back({s, 1, context - s * 37, b.tables[s]});
  return b;
}

// A host cache (NaN outside the contexts, random inside) and its device copy.
struct Caches {
  TestCache host;
  Tensor device;
  PagedCacheView device_view;

  Caches(const Batch& b, int64_t width, uint32_t seed) : host(b.num_blocks, b.block_size, width) {
    for (size_t s = 0; s < b.seqs.size(); ++s) {
      const std::vector<float> rows =
          RandomVector(static_cast<size_t>(b.seqs[s].context_len * width), seed + s);
      for (int64_t p = 0; p < b.seqs[s].context_len; ++p) {
        std::copy_n(rows.data() + p * width, width, host.Row(b.tables[s], p));
      }
    }
    device = Dev(Tensor::FromF32({b.num_blocks * b.block_size, width}, host.storage));
    device_view = {device.f32(), b.num_blocks, b.block_size, width};
  }
};

TwinMatrix SentinelOutput(int64_t rows, int64_t cols) {
  TwinMatrix out(rows, cols, 0);
  std::fill(out.host.f32(), out.host.f32() + out.host.numel(), kSentinel);
  out.Upload();
  return out;
}

struct MlaCase {
  const char* name;
  Ops::MlaShape shape;
  bool long_decode;
};

class CudaMlaTest : public CudaOpsTest,
                    public ::testing::WithParamInterface<std::tuple<MlaCase, bool, bool>> {};

// Parameters: the shape, absorbed (else prefill) form, bf16 (else f32) wkv_b.
TEST_P(CudaMlaTest, MatchesCpu) {
  const auto& [c, absorbed, bf16] = GetParam();
  const Ops::MlaShape& s = c.shape;
  const Batch b = c.long_decode ? LongDecode(3, 1500) : Ragged();
  const int64_t qk = s.qk_nope_head_dim + s.qk_rope_head_dim;
  Caches cache(b, s.kv_lora_rank + s.qk_rope_head_dim, 51);
  const Tensor wkv_b =
      RandomTensor({s.heads * (s.qk_nope_head_dim + s.v_head_dim), s.kv_lora_rank}, 52, 0.05f);
  const Tensor cpu_w =
      bf16 ? Tensor::FromF32(wkv_b.shape(), RoundToBf16({wkv_b.f32(), wkv_b.f32() + wkv_b.numel()}))
           : wkv_b;
  const Tensor dev_w = bf16 ? DevBf16(wkv_b) : Dev(wkv_b);
  TwinMatrix q(b.rows, s.heads * qk, 53);
  TwinMatrix out = SentinelOutput(b.rows, s.heads * s.v_head_dim);
  const SeqTables seq_tables(b.seqs, b.rows, b.block_size);
  if (absorbed) {
    cpu_->MlaAttentionAbsorbed(q.host_view(), cpu_w, cache.host.view, seq_tables.host(), s, out.host_view());
    gpu_->MlaAttentionAbsorbed(q.device_view(), dev_w, cache.device_view, seq_tables.device(), s,
                               out.device_view());
  } else {
    cpu_->MlaAttentionPrefill(q.host_view(), cpu_w, cache.host.view, seq_tables.host(), b.seqs, s, out.host_view());
    gpu_->MlaAttentionPrefill(q.device_view(), dev_w, cache.device_view, seq_tables.device(), b.seqs, s,
                              out.device_view());
  }
  Sync();
  const double err = RelativeError(out.DeviceElements(), out.HostElements());
  EXPECT_LE(err, bf16 ? kBf16Tolerance : kF32Tolerance);
  std::printf("%s %s %s: error %.2e\n", c.name, absorbed ? "absorbed" : "prefill",
              bf16 ? "bf16" : "f32", err);
}

constexpr Ops::MlaShape kTinyMla{4, 64, 32, 64, 128, 0.1f};
constexpr Ops::MlaShape kDeepSeekMla{128, 128, 64, 128, 512, 0.1352f};

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaMlaTest,
    ::testing::Combine(::testing::Values(MlaCase{"tiny_ragged", kTinyMla, false},
                                         MlaCase{"deepseek_ragged", kDeepSeekMla, false},
                                         MlaCase{"deepseek_long_decode", kDeepSeekMla, true}),
                       ::testing::Bool(), ::testing::Bool()),
    [](const auto& info) {
      return std::string(std::get<0>(info.param).name) +
             (std::get<1>(info.param) ? "_absorbed" : "_prefill") +
             (std::get<2>(info.param) ? "_bf16" : "_f32");
    });

struct GqaCase {
  const char* name;
  Ops::GqaShape shape;
  bool long_decode;
};

class CudaGqaTest : public CudaOpsTest, public ::testing::WithParamInterface<GqaCase> {};

TEST_P(CudaGqaTest, MatchesCpu) {
  const GqaCase& c = GetParam();
  const Ops::GqaShape& s = c.shape;
  const Batch b = c.long_decode ? LongDecode(2, 3000) : Ragged();
  Caches cache(b, 2 * s.kv_heads * s.head_dim, 61);
  TwinMatrix q(b.rows, s.q_heads * s.head_dim, 62);
  TwinMatrix out = SentinelOutput(b.rows, s.q_heads * s.head_dim);
  const SeqTables seq_tables(b.seqs, b.rows, b.block_size);
  cpu_->GqaAttention(q.host_view(), cache.host.view, seq_tables.host(), s, out.host_view());
  gpu_->GqaAttention(q.device_view(), cache.device_view, seq_tables.device(), s, out.device_view());
  Sync();
  EXPECT_LE(RelativeError(out.DeviceElements(), out.HostElements()), kF32Tolerance);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaGqaTest,
                         ::testing::Values(GqaCase{"tiny", {4, 2, 32, 0.17f}, false},
                                           GqaCase{"qwen3_235b", {64, 4, 128, 0.088f}, false},
                                           GqaCase{"qwen3_235b_long", {64, 4, 128, 0.088f}, true}),
                         [](const auto& info) { return std::string(info.param.name); });

// The absorbed form over a cache the GPU wrote itself (CacheWrite, then
// attention in the same stream), as a layer of the model does it.
TEST_F(CudaOpsTest, AttentionSeesTheRowsCacheWriteJustWrote) {
  const Batch b = Ragged();
  const Ops::MlaShape s = kTinyMla;
  const int64_t width = s.kv_lora_rank + s.qk_rope_head_dim;
  Caches cache(b, width, 71);
  TwinMatrix values(b.rows, width, 72);
  const SeqTables seq_tables(b.seqs, b.rows, b.block_size);
  cpu_->CacheWrite(values.host_view(), seq_tables.host(), cache.host.view);
  gpu_->CacheWrite(values.device_view(), seq_tables.device(), cache.device_view);
  const Tensor wkv_b =
      RandomTensor({s.heads * (s.qk_nope_head_dim + s.v_head_dim), s.kv_lora_rank}, 73, 0.05f);
  TwinMatrix q(b.rows, s.heads * (s.qk_nope_head_dim + s.qk_rope_head_dim), 74);
  TwinMatrix out = SentinelOutput(b.rows, s.heads * s.v_head_dim);
  cpu_->MlaAttentionAbsorbed(q.host_view(), wkv_b, cache.host.view, seq_tables.host(), s, out.host_view());
  gpu_->MlaAttentionAbsorbed(q.device_view(), Dev(wkv_b), cache.device_view, seq_tables.device(), s,
                             out.device_view());
  Sync();
  EXPECT_LE(RelativeError(out.DeviceElements(), out.HostElements()), kF32Tolerance);
}

}  // namespace
}  // namespace moeserve::testing
