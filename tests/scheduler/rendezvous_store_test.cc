#include "scheduler/server/rendezvous_store.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moeserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(RendezvousStoreTest, KeyGenerationReadsGroupKeysOnly) {
  EXPECT_EQ(*RendezvousStore::KeyGeneration("moeserve/group-7/0"), 7u);
  EXPECT_EQ(*RendezvousStore::KeyGeneration("moeserve/group-12/nccl/1/unique_id"), 12u);
  for (const std::string bad :
       {"", "moeserve/group-", "moeserve/group-/x", "moeserve/group-0/x", "moeserve/group-7",
        "moeserve/group-7x/a", "other/group-7/a", "moeserve/group-99999999999999999999/a"}) {
    auto g = RendezvousStore::KeyGeneration(bad);
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(g.status().message(), HasSubstr("is not a group key")) << bad;
  }
}

TEST(RendezvousStoreTest, SetsAndGetsKeysOfTheCurrentGeneration) {
  RendezvousStore store;
  ASSERT_TRUE(store.Set("moeserve/group-3/0", "a", 3).ok());
  ASSERT_TRUE(store.Set("moeserve/group-3/1", "b", 3).ok());
  auto both = store.Get({"moeserve/group-3/0", "moeserve/group-3/1"}, 3);
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_THAT(*both, ElementsAre("a", "b"));
  auto missing = store.Get({"moeserve/group-3/0", "moeserve/group-3/2"}, 3);
  ASSERT_TRUE(missing.ok());
  EXPECT_TRUE(missing->empty()) << "a missing key: not found yet, the caller polls";
}

TEST(RendezvousStoreTest, RefusesKeysOfAnyOtherGenerationWithBothNumbers) {
  RendezvousStore store;
  auto none = store.Set("moeserve/group-1/0", "x", 0);
  EXPECT_EQ(none.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(none.message(), HasSubstr("is for group 1, but no group is forming"));

  ASSERT_TRUE(store.Set("moeserve/group-4/0", "x", 4).ok());
  // The future: what once wedged every later group until a restart.
  auto future = store.Set("moeserve/group-18446744073709551615/0", "x", 4);
  EXPECT_EQ(future.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(future.message(),
              HasSubstr("is for group 18446744073709551615, but the group forming now is 4"));
  auto past = store.Get({"moeserve/group-3/0"}, 4);
  EXPECT_EQ(past.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store.size(), 1u) << "refused keys are not stored";

  // The next group starts from an empty store.
  ASSERT_TRUE(store.Set("moeserve/group-5/0", "y", 5).ok());
  EXPECT_EQ(store.size(), 1u);
  auto old = store.Get({"moeserve/group-4/0"}, 5);
  EXPECT_EQ(old.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(RendezvousStoreTest, BoundsKeyAndValueSizesKeyCountAndTotalBytes) {
  RendezvousStore::Limits limits;
  limits.max_key_bytes = 32;
  limits.max_value_bytes = 10;
  limits.max_keys = 3;
  limits.max_total_value_bytes = 25;
  RendezvousStore store(limits);

  const std::string long_key = "moeserve/group-1/" + std::string(16, 'k');  // 33 bytes
  auto key = store.Set(long_key, "v", 1);
  EXPECT_EQ(key.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(key.message(), HasSubstr("has 33 bytes; at most 32 are accepted"));
  EXPECT_EQ(store.Get({long_key}, 1).status().code(), absl::StatusCode::kInvalidArgument);

  auto value = store.Set("moeserve/group-1/a", std::string(11, 'v'), 1);
  EXPECT_EQ(value.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(value.message(), HasSubstr("has 11 bytes; at most 10 are accepted"));

  ASSERT_TRUE(store.Set("moeserve/group-1/a", std::string(10, 'v'), 1).ok());
  ASSERT_TRUE(store.Set("moeserve/group-1/b", std::string(10, 'v'), 1).ok());
  auto bytes = store.Set("moeserve/group-1/c", std::string(6, 'v'), 1);
  EXPECT_EQ(bytes.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(bytes.message(), HasSubstr("would exceed 25 bytes"));
  // Replacing a value counts only the difference.
  EXPECT_TRUE(store.Set("moeserve/group-1/b", std::string(5, 'w'), 1).ok());
  ASSERT_TRUE(store.Set("moeserve/group-1/c", std::string(5, 'v'), 1).ok());
  auto count = store.Set("moeserve/group-1/d", "v", 1);
  EXPECT_EQ(count.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(count.message(), HasSubstr("holds 3 keys of group 1, the most it accepts"));
  EXPECT_TRUE(store.Set("moeserve/group-1/a", "v", 1).ok()) << "an existing key may be replaced";

  auto many = store.Get(
      {"moeserve/group-1/a", "moeserve/group-1/b", "moeserve/group-1/c", "moeserve/group-1/d"}, 1);
  EXPECT_EQ(many.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(many.status().message(), HasSubstr("a rendezvous read of 4 keys; at most 3"));
}

}  // namespace
}  // namespace moeserve
