// The CUDA twin of the KV cache dtypes (kernels/cuda/kv_cache.*): CacheWrite
// in fp32, bf16 and fp8 against the CPU twin, byte for byte, then paged
// attention (MLA in both forms, GQA) reading those caches against the CPU
// attention over the CPU-written cache. Every test skips without a GPU.
//
// Tolerances: the GPU rounds as the CPU does (bf16 and e4m3 round to nearest
// even; scale = amax / 448 and x / scale in IEEE float32 division), so the
// cache bytes must be identical; both attentions then read the same float32
// values (the decode is exact and the scale multiply is one float32
// product), so the outputs differ only by the float32 summation order, as
// with a float32 cache (cuda_attention_test): bound 1e-5 relative.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/kv_cache_layout.h"
#include "tests/kernels/cuda/cuda_test_util.h"

namespace moeserve::testing {
namespace {

constexpr double kTolerance = 1e-5;

// Three sequences and a row (3) that belongs to none: a chunked prefill, a
// decode and a fresh prefill.
struct Batch {
  int64_t rows = 10;
  int64_t block_size = 4;
  int64_t num_blocks = 8;
  std::vector<std::vector<int32_t>> tables = {{5, 2}, {1, 7}, {3, 0}};
  std::vector<SeqSlice> seqs = {{0, 3, 7, tables[0]}, {4, 1, 6, tables[1]}, {5, 5, 5, tables[2]}};
};

// A cache in `layout` on both sides: the earlier context rows of every
// sequence stored on the host (as the CPU twin stores them) and uploaded.
struct TwinCache {
  KvRowLayout layout;
  std::vector<uint8_t> host;
  Tensor device;
  PagedCacheView host_view, device_view;

  TwinCache(const KvRowLayout& l, const Batch& b, uint32_t seed) : layout(l) {
    const int64_t bytes = b.num_blocks * b.block_size * l.row_bytes();
    host.assign(static_cast<size_t>(bytes), 0);
    host_view = {host.data(), b.num_blocks,     b.block_size, l.width,
                 l.dtype,     l.quantized_cols, l.tile};
    for (size_t s = 0; s < b.seqs.size(); ++s) {
      const int64_t earlier = b.seqs[s].context_len - b.seqs[s].num_tokens;
      const std::vector<float> rows =
          RandomVector(static_cast<size_t>(std::max<int64_t>(earlier, 1) * l.width), seed + s);
      for (int64_t p = 0; p < earlier; ++p) {
        const int32_t block = b.tables[s][static_cast<size_t>(p / b.block_size)];
        QuantizeKvRow(l, rows.data() + p * l.width, host_view.token(block, p % b.block_size));
      }
    }
    auto t = cuda::AllocateDevice(DType::kF32, {CeilDiv(bytes, 4)});
    EXPECT_TRUE(t.ok()) << t.status();
    device = *std::move(t);
    EXPECT_TRUE(cuda::CopyToDevice(device.raw(), host.data(), host.size()).ok());
    device_view = host_view;
    device_view.data = device.raw();
  }
  std::vector<uint8_t> DeviceBytes() const {
    std::vector<uint8_t> out(host.size());
    EXPECT_TRUE(cuda::CopyToHost(out.data(), device.raw(), out.size()).ok());
    return out;
  }
};

// The new tokens' rows written by both twins: the caches must be identical.
void WriteBoth(Ops& cpu, cuda::CudaOps& gpu, TwinCache& cache, const Batch& b, uint32_t seed) {
  TwinMatrix values(b.rows, cache.layout.width, seed);
  const SeqTables seq_tables(b.seqs, b.rows, b.block_size);
  cpu.CacheWrite(values.host_view(), seq_tables.host(), cache.host_view);
  gpu.CacheWrite(values.device_view(), seq_tables.device(), cache.device_view);
  ASSERT_TRUE(gpu.Synchronize().ok());
  const std::vector<uint8_t> got = cache.DeviceBytes();
  size_t differing = 0;
  for (size_t i = 0; i < got.size(); ++i) differing += got[i] != cache.host[i];
  EXPECT_EQ(differing, 0u) << KvCacheDtypeName(cache.layout.dtype) << ": " << differing
                           << " cache bytes differ from the CPU twin's";
}

TwinMatrix SentinelOutput(int64_t rows, int64_t cols) {
  TwinMatrix out(rows, cols, 0);
  std::fill(out.host.f32(), out.host.f32() + out.host.numel(), 7.0f);
  out.Upload();
  return out;
}

std::string DtypeName(KvCacheDtype d) { return std::string(KvCacheDtypeName(d)); }

struct MlaCase {
  const char* name;
  Ops::MlaShape shape;
};

class CudaKvMlaTest
    : public CudaOpsTest,
      public ::testing::WithParamInterface<std::tuple<MlaCase, KvCacheDtype, bool>> {};

TEST_P(CudaKvMlaTest, CacheWriteAndAttentionMatchCpu) {
  const auto& [c, dtype, absorbed] = GetParam();
  const Ops::MlaShape& s = c.shape;
  const Batch b;
  TwinCache cache(MlaKvRowLayout(dtype, s.kv_lora_rank, s.qk_rope_head_dim), b, 81);
  WriteBoth(*cpu_, *gpu_, cache, b, 82);
  const Tensor wkv_b =
      RandomTensor({s.heads * (s.qk_nope_head_dim + s.v_head_dim), s.kv_lora_rank}, 83, 0.05f);
  TwinMatrix q(b.rows, s.heads * (s.qk_nope_head_dim + s.qk_rope_head_dim), 84);
  TwinMatrix out = SentinelOutput(b.rows, s.heads * s.v_head_dim);
  const Tensor dev_w = Dev(wkv_b);
  const SeqTables seq_tables(b.seqs, b.rows, b.block_size);
  if (absorbed) {
    cpu_->MlaAttentionAbsorbed(q.host_view(), wkv_b, cache.host_view, seq_tables.host(), s, out.host_view());
    gpu_->MlaAttentionAbsorbed(q.device_view(), dev_w, cache.device_view, seq_tables.device(), s,
                               out.device_view());
  } else {
    cpu_->MlaAttentionPrefill(q.host_view(), wkv_b, cache.host_view, seq_tables.host(), b.seqs, s, out.host_view());
    gpu_->MlaAttentionPrefill(q.device_view(), dev_w, cache.device_view, seq_tables.device(), b.seqs, s,
                              out.device_view());
  }
  Sync();
  const double err = RelativeError(out.DeviceElements(), out.HostElements());
  EXPECT_LE(err, kTolerance);
  std::printf("%s kv %s %s: error %.2e\n", c.name, DtypeName(dtype).c_str(),
              absorbed ? "absorbed" : "prefill", err);
}

INSTANTIATE_TEST_SUITE_P(
    Dtypes, CudaKvMlaTest,
    ::testing::Combine(
        // A tiny latent of 160 (one full and one partial fp8 tile) and DeepSeek-V3's
        // 512 + 64 (FlashMLA's 656-byte rows).
        ::testing::Values(MlaCase{"tiny", {4, 64, 32, 64, 160, 0.1f}},
                          MlaCase{"deepseek", {128, 128, 64, 128, 512, 0.1352f}}),
        ::testing::Values(KvCacheDtype::kF32, KvCacheDtype::kBF16, KvCacheDtype::kFP8E4M3),
        ::testing::Bool()),
    [](const auto& info) {
      return std::string(std::get<0>(info.param).name) + "_" + DtypeName(std::get<1>(info.param)) +
             (std::get<2>(info.param) ? "_absorbed" : "_prefill");
    });

class CudaKvGqaTest : public CudaOpsTest, public ::testing::WithParamInterface<KvCacheDtype> {};

TEST_P(CudaKvGqaTest, CacheWriteAndAttentionMatchCpu) {
  const KvCacheDtype dtype = GetParam();
  const Ops::GqaShape s{8, 2, 32, 0.17f};
  const Batch b;
  TwinCache cache(GqaKvRowLayout(dtype, s.kv_heads, s.head_dim), b, 91);
  WriteBoth(*cpu_, *gpu_, cache, b, 92);
  TwinMatrix q(b.rows, s.q_heads * s.head_dim, 93);
  TwinMatrix out = SentinelOutput(b.rows, s.q_heads * s.head_dim);
  const SeqTables seq_tables(b.seqs, b.rows, b.block_size);
  cpu_->GqaAttention(q.host_view(), cache.host_view, seq_tables.host(), s, out.host_view());
  gpu_->GqaAttention(q.device_view(), cache.device_view, seq_tables.device(), s, out.device_view());
  Sync();
  const double err = RelativeError(out.DeviceElements(), out.HostElements());
  EXPECT_LE(err, kTolerance);
  std::printf("gqa kv %s: error %.2e\n", DtypeName(dtype).c_str(), err);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaKvGqaTest,
                         ::testing::Values(KvCacheDtype::kF32, KvCacheDtype::kBF16,
                                           KvCacheDtype::kFP8E4M3),
                         [](const auto& info) { return DtypeName(info.param); });

}  // namespace
}  // namespace moeserve::testing
