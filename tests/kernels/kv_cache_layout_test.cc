// The KV cache row layouts (kernels/kv_cache_layout.h): sizes, the exact
// bytes of FlashMLA's 656-byte FP8 row, round trips within the rounding
// bounds of each dtype, partial tiles, zeros, and CacheWrite storing rows in
// the cache's dtype.
//
// Round-trip bounds (unit roundoff u = 2^-p for a p-bit significand, round
// to nearest even):
//   bf16, p = 8: |x' - x| <= 2^-8 |x| (normal range; the test values are).
//   e4m3, p = 4: x / scale lies in [-448, 448]; normal codes (>= 2^-6) round
//     with relative error <= 2^-4, subnormal codes are spaced 2^-9 apart, so
//     |x / scale - code| <= 2^-4 |x / scale| + 2^-10, i.e.
//     |x' - x| <= 2^-4 |x| + 2^-10 scale, scale = amax(tile) / 448;
//     the float32 division and the multiply back add <= 2 * 2^-24 |x|, and
//     the bound gets that slack (2^-20 |x| + 1e-30).
#include "kernels/kv_cache_layout.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/tensor.h"
#include "tests/kernels/kernel_test_util.h"

namespace moeserve {
namespace {

// Values spread over 8 binades ([2^-4, 2^4) in magnitude, random sign), so
// rounding is exercised at many exponents and within a tile values far below
// its amax exist (they hit e4m3 subnormals).
std::vector<float> WideValues(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> mant(1.0f, 2.0f);
  std::uniform_int_distribution<int> exp(-4, 3), sign(0, 1);
  std::vector<float> v(n);
  for (float& x : v) x = std::ldexp(mant(rng), exp(rng)) * (sign(rng) ? -1.0f : 1.0f);
  return v;
}

std::vector<float> RoundTrip(const KvRowLayout& l, const std::vector<float>& in) {
  std::vector<uint8_t> row(static_cast<size_t>(l.row_bytes()), 0xAB);
  QuantizeKvRow(l, in.data(), row.data());
  std::vector<float> out(in.size());
  DequantizeKvRow(l, row.data(), out.data());
  return out;
}

// The bound of the header for column c of a row `in` stored with layout `l`.
double Bound(const KvRowLayout& l, const std::vector<float>& in, int64_t c) {
  const double x = std::fabs(in[static_cast<size_t>(c)]);
  if (l.dtype == KvCacheDtype::kF32) return 0.0;
  if (l.dtype == KvCacheDtype::kBF16 || c >= l.quantized_cols) return std::ldexp(x, -8);
  const int64_t begin = c / l.tile * l.tile;
  const int64_t end = std::min(l.quantized_cols, begin + l.tile);
  double amax = 0;
  for (int64_t i = begin; i < end; ++i) amax = std::max(amax, std::fabs(double{in[i]}));
  return std::ldexp(x, -4) + std::ldexp(amax / 448.0, -10) + std::ldexp(x, -20) + 1e-30;
}

// Checks every column against its bound; returns the largest error relative
// to the bound (<= 1 passes), for the record.
double ExpectWithinBounds(const KvRowLayout& l, const std::vector<float>& in) {
  const std::vector<float> out = RoundTrip(l, in);
  double worst = 0;
  for (int64_t c = 0; c < l.width; ++c) {
    const double err = std::fabs(double{out[c]} - in[c]);
    const double bound = Bound(l, in, c);
    EXPECT_LE(err, bound) << KvCacheDtypeName(l.dtype) << " column " << c << " value " << in[c];
    if (bound > 0) worst = std::max(worst, err / bound);
  }
  return worst;
}

TEST(KvCacheLayoutTest, RowBytesPerDtype) {
  // DeepSeek-V3: 512 latent + 64 rope.
  EXPECT_EQ(MlaKvRowLayout(KvCacheDtype::kF32, 512, 64).row_bytes(), 2304);
  EXPECT_EQ(MlaKvRowLayout(KvCacheDtype::kBF16, 512, 64).row_bytes(), 1152);
  const KvRowLayout fp8 = MlaKvRowLayout(KvCacheDtype::kFP8E4M3, 512, 64);
  EXPECT_EQ(fp8.row_bytes(), 656);  // FlashMLA: 512 + 4 * 4 + 64 * 2
  EXPECT_EQ(fp8.num_tiles(), 4);
  EXPECT_EQ(fp8.scales_offset(), 512);
  EXPECT_EQ(fp8.tail_offset(), 528);
  // 61 layers: the per-token figures of docs/architecture.md.
  EXPECT_EQ(61 * MlaKvRowLayout(KvCacheDtype::kF32, 512, 64).row_bytes(), 140544);
  EXPECT_EQ(61 * MlaKvRowLayout(KvCacheDtype::kBF16, 512, 64).row_bytes(), 70272);
  EXPECT_EQ(61 * fp8.row_bytes(), 40016);
  // Qwen3-235B-A22B: 4 KV heads of 128: 1024 codes + 8 scales.
  const KvRowLayout gqa = GqaKvRowLayout(KvCacheDtype::kFP8E4M3, 4, 128);
  EXPECT_EQ(gqa.width, 1024);
  EXPECT_EQ(gqa.num_tiles(), 8);
  EXPECT_EQ(gqa.row_bytes(), 1024 + 32);
  // A tiny latent of 5: codes padded to 8 before the scales; the row to 4.
  const KvRowLayout tiny = MlaKvRowLayout(KvCacheDtype::kFP8E4M3, 5, 3);
  EXPECT_EQ(tiny.scales_offset(), 8);
  EXPECT_EQ(tiny.tail_offset(), 12);
  EXPECT_EQ(tiny.row_bytes(), 20);  // 12 + 3 * 2 = 18, padded
}

TEST(KvCacheLayoutTest, ValidRequiresAnFp8Split) {
  EXPECT_TRUE((KvRowLayout{KvCacheDtype::kBF16, 8, 0, 0}.valid()));
  EXPECT_FALSE((KvRowLayout{KvCacheDtype::kFP8E4M3, 8, 0, 4}.valid()));
  EXPECT_FALSE((KvRowLayout{KvCacheDtype::kFP8E4M3, 8, 9, 4}.valid()));
  EXPECT_FALSE((KvRowLayout{KvCacheDtype::kFP8E4M3, 8, 8, 0}.valid()));
  EXPECT_FALSE((KvRowLayout{KvCacheDtype::kF32, 0, 0, 0}.valid()));
}

// The 656-byte FlashMLA row checked byte by byte against an independent
// reading of the format: e4m3 codes of x / (amax / 448) per 128-value tile,
// four little-endian float32 scales, 64 bf16 rope values.
TEST(KvCacheLayoutTest, FlashMlaFp8RowByteByByte) {
  const KvRowLayout l = MlaKvRowLayout(KvCacheDtype::kFP8E4M3, 512, 64);
  std::vector<float> in = WideValues(576, 3);
  for (int i = 256; i < 384; ++i) in[i] *= 1e-3f;  // tile 2 far smaller than the others
  std::vector<uint8_t> row(656, 0xAB);
  QuantizeKvRow(l, in.data(), row.data());
  for (int t = 0; t < 4; ++t) {
    float amax = 0;
    for (int i = 128 * t; i < 128 * (t + 1); ++i) amax = std::fmax(amax, std::fabs(in[i]));
    const float scale = amax / 448.0f;
    float stored;
    std::memcpy(&stored, row.data() + 512 + 4 * t, 4);
    EXPECT_EQ(stored, scale) << "scale of tile " << t;
    for (int i = 128 * t; i < 128 * (t + 1); ++i) {
      ASSERT_EQ(row[i], F32ToFp8E4M3(in[i] / scale)) << "code " << i;
    }
  }
  for (int i = 0; i < 64; ++i) {
    const uint16_t bits = static_cast<uint16_t>(row[528 + 2 * i] | (row[529 + 2 * i] << 8));
    ASSERT_EQ(bits, F32ToBf16(in[512 + i])) << "rope value " << i;
  }
  // The largest value of each tile is stored as +-448 (at least one code per tile).
  EXPECT_GE(std::count(row.begin(), row.begin() + 512, 0x7e) +
                std::count(row.begin(), row.begin() + 512, 0xfe),
            4);
}

TEST(KvCacheLayoutTest, F32IsExact) {
  const std::vector<float> in = WideValues(100, 1);
  EXPECT_EQ(RoundTrip({KvCacheDtype::kF32, 100, 0, 0}, in), in);
}

TEST(KvCacheLayoutTest, Bf16RoundsWithinHalfAnUlp) {
  const std::vector<float> in = WideValues(4096, 2);
  const double worst = ExpectWithinBounds({KvCacheDtype::kBF16, 4096, 0, 0}, in);
  EXPECT_GT(worst, 0.5);  // the bound is tight: some value lands near a midpoint
  // Ties go to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7.
  EXPECT_EQ(RoundTrip({KvCacheDtype::kBF16, 1, 0, 0}, {1.0f + 0x1p-8f})[0], 1.0f);
  EXPECT_EQ(RoundTrip({KvCacheDtype::kBF16, 1, 0, 0}, {1.0f + 3 * 0x1p-8f})[0], 1.0f + 0x1p-6f);
}

TEST(KvCacheLayoutTest, Fp8MlaRowWithinBounds) {
  const KvRowLayout l = MlaKvRowLayout(KvCacheDtype::kFP8E4M3, 512, 64);
  for (uint32_t seed = 0; seed < 20; ++seed) ExpectWithinBounds(l, WideValues(576, seed));
}

TEST(KvCacheLayoutTest, Fp8GqaRowHasAScalePerHeadOfKeysAndValues) {
  const KvRowLayout l = GqaKvRowLayout(KvCacheDtype::kFP8E4M3, 2, 16);  // [K0 K1 V0 V1]
  std::vector<float> in = WideValues(64, 5);
  for (int i = 0; i < 16; ++i) in[16 + i] *= 100.0f;  // K1 large
  for (int i = 0; i < 16; ++i) in[48 + i] *= 0.01f;   // V1 small
  ExpectWithinBounds(l, in);
  std::vector<uint8_t> row(static_cast<size_t>(l.row_bytes()));
  QuantizeKvRow(l, in.data(), row.data());
  for (int h = 0; h < 4; ++h) {
    float amax = 0;
    for (int i = 16 * h; i < 16 * (h + 1); ++i) amax = std::fmax(amax, std::fabs(in[i]));
    float stored;
    std::memcpy(&stored, row.data() + 64 + 4 * h, 4);
    EXPECT_EQ(stored, amax / 448.0f) << "head part " << h;
  }
}

// kv_lora_rank 300 = 128 + 128 + 44: the last tile is partial and has its
// own scale; a tiny latent of 40 is one partial tile.
TEST(KvCacheLayoutTest, Fp8PartialTiles) {
  for (int64_t lora : {300, 40, 1}) {
    const KvRowLayout l = MlaKvRowLayout(KvCacheDtype::kFP8E4M3, lora, 8);
    std::vector<float> in = WideValues(static_cast<size_t>(lora + 8), 7);
    for (int64_t i = lora / 128 * 128; i < lora; ++i) in[i] *= 1e-4f;  // partial tile tiny
    ExpectWithinBounds(l, in);
    std::vector<uint8_t> row(static_cast<size_t>(l.row_bytes()));
    QuantizeKvRow(l, in.data(), row.data());
    float amax = 0;
    for (int64_t i = lora / 128 * 128; i < lora; ++i) amax = std::fmax(amax, std::fabs(in[i]));
    float last;
    std::memcpy(&last, row.data() + l.scales_offset() + 4 * (l.num_tiles() - 1), 4);
    EXPECT_EQ(last, amax / 448.0f) << "lora " << lora;
  }
}

TEST(KvCacheLayoutTest, ZerosStayZeroWithAZeroScale) {
  const KvRowLayout l = MlaKvRowLayout(KvCacheDtype::kFP8E4M3, 256, 8);
  std::vector<float> in(264, 0.0f);
  for (int i = 128; i < 256; ++i) in[i] = 0.5f;  // tile 1 non-zero, tile 0 all zero
  std::vector<uint8_t> row(static_cast<size_t>(l.row_bytes()), 0xAB);
  QuantizeKvRow(l, in.data(), row.data());
  for (int i = 0; i < 128; ++i) ASSERT_EQ(row[i], 0) << i;
  float s0, s1;
  std::memcpy(&s0, row.data() + 256, 4);
  std::memcpy(&s1, row.data() + 260, 4);
  EXPECT_EQ(s0, 0.0f);
  EXPECT_EQ(s1, 0.5f / 448.0f);
  ExpectWithinBounds(l, in);
  for (KvCacheDtype d : {KvCacheDtype::kF32, KvCacheDtype::kBF16, KvCacheDtype::kFP8E4M3}) {
    const KvRowLayout z = MlaKvRowLayout(d, 256, 8);
    EXPECT_EQ(RoundTrip(z, std::vector<float>(264, 0.0f)), std::vector<float>(264, 0.0f));
  }
}

// CacheWrite stores each row as QuantizeKvRow does, in the slot of its
// position, and leaves every other slot alone.
TEST(KvCacheLayoutTest, CacheWriteQuantizesIntoTheBlockTable) {
  auto ops = CreateCpuOps();
  for (KvCacheDtype d : {KvCacheDtype::kF32, KvCacheDtype::kBF16, KvCacheDtype::kFP8E4M3}) {
    const KvRowLayout l = MlaKvRowLayout(d, 160, 16);
    const int64_t block_size = 4, num_blocks = 6, rb = l.row_bytes();
    std::vector<uint8_t> storage(static_cast<size_t>(num_blocks * block_size * rb), 0xCD);
    PagedCacheView view{storage.data(),   num_blocks, block_size, l.width, d,
                        l.quantized_cols, l.tile};
    const std::vector<int32_t> table_a = {5, 2}, table_b = {0};
    const std::vector<SeqSlice> seqs = {{0, 3, 7, table_a}, {3, 2, 3, table_b}};
    Tensor values = testing::RandomTensor({5, l.width}, 11);
    ops->CacheWrite(values.mat(), HostSeqTable::Build(seqs, 5, block_size).View(), view);
    std::vector<uint8_t> want(static_cast<size_t>(rb));
    auto expect_row = [&](int32_t block, int64_t slot, int64_t batch_row) {
      QuantizeKvRow(l, values.f32() + batch_row * l.width, want.data());
      EXPECT_EQ(0, std::memcmp(view.token(block, slot), want.data(), want.size()))
          << KvCacheDtypeName(d) << " block " << block << " slot " << slot;
    };
    expect_row(2, 0, 0);
    expect_row(2, 1, 1);
    expect_row(2, 2, 2);
    expect_row(0, 1, 3);
    expect_row(0, 2, 4);
    EXPECT_EQ(view.token(2, 3)[0], 0xCD);  // untouched slot
    EXPECT_EQ(view.token(0, 0)[rb - 1], 0xCD);
  }
}

}  // namespace
}  // namespace moeserve
