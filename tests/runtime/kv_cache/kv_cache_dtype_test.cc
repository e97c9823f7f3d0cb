// The --kv-cache-dtype choice and the cache it allocates.
#include "runtime/kv_cache/kv_cache_dtype.h"

#include <gtest/gtest.h>

#include "runtime/kv_cache/paged_kv_cache.h"

namespace moeserve {
namespace {

TEST(KvCacheDtypeTest, ParsesTheFlagWords) {
  EXPECT_EQ(*ParseKvCacheDtype("auto"), KvCacheDtypeChoice{});
  EXPECT_EQ(*ParseKvCacheDtype("fp32"), KvCacheDtypeChoice{KvCacheDtype::kF32});
  EXPECT_EQ(*ParseKvCacheDtype("bf16"), KvCacheDtypeChoice{KvCacheDtype::kBF16});
  EXPECT_EQ(*ParseKvCacheDtype("fp8"), KvCacheDtypeChoice{KvCacheDtype::kFP8E4M3});
}

TEST(KvCacheDtypeTest, ABadValueNamesTheFlagAndTheAcceptedValues) {
  for (const char* bad : {"", "FP8", "fp16", "e4m3", "float32"}) {
    const auto r = ParseKvCacheDtype(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message(), std::string("--kv-cache-dtype must be one of auto, fp32, "
                                                "bf16, fp8, got \"") +
                                        bad + "\"");
  }
}

TEST(KvCacheDtypeTest, AutoIsExactOnTheCpuAndBf16OnCuda) {
  EXPECT_EQ(ResolveKvCacheDtype({}, KvCacheDevice::kCpu), KvCacheDtype::kF32);
  EXPECT_EQ(ResolveKvCacheDtype({}, KvCacheDevice::kCuda), KvCacheDtype::kBF16);
  EXPECT_EQ(ResolveKvCacheDtype(KvCacheDtype::kFP8E4M3, KvCacheDevice::kCpu),
            KvCacheDtype::kFP8E4M3);
}

TEST(PagedKvCacheTest, CapacityCountsTheBytesOfTheDtype) {
  PagedKvCache::Options o;
  o.num_layers = 3;
  o.num_blocks = 5;
  o.block_size = 4;
  for (KvCacheDtype d : {KvCacheDtype::kF32, KvCacheDtype::kBF16, KvCacheDtype::kFP8E4M3}) {
    o.set_row(MlaKvRowLayout(d, 512, 64));
    auto cache = PagedKvCache::Create(o);
    ASSERT_TRUE(cache.ok()) << cache.status();
    const int64_t row = d == KvCacheDtype::kF32 ? 2304 : d == KvCacheDtype::kBF16 ? 1152 : 656;
    EXPECT_EQ((*cache)->row_bytes(), row);
    EXPECT_EQ((*cache)->capacity_bytes(), 3 * 5 * 4 * row);
    const PagedCacheView v = (*cache)->layer(2);
    EXPECT_EQ(v.dtype, d);
    EXPECT_EQ(v.row_bytes(), row);
    EXPECT_EQ(v.token(4, 3) - v.token(0, 0), (4 * 4 + 3) * row);
  }
}

TEST(PagedKvCacheTest, Fp8NeedsItsSplit) {
  PagedKvCache::Options o{1, 1, 4, 576, KvCacheDtype::kFP8E4M3, 0, 0};
  const auto cache = PagedKvCache::Create(o);
  ASSERT_FALSE(cache.ok());
  EXPECT_EQ(cache.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(cache.status().message().find("fp8"), std::string::npos) << cache.status();
}

}  // namespace
}  // namespace moeserve
