// The CUDA op set's fixed-capacity MoE ops against the CPU twin
// (kernels/cpu/moe.cc), with random routings, replicated experts, empty slots
// and an expert that is not loaded. Skipped without a GPU.
//
// Tolerances: MoeDispatchLayout is integer logic plus row copies, and
// MoeCombineReduce adds in the twin's order without fused multiply-add, so
// both must match to the bit (EXPECT_EQ on floats). GroupedGatedFfn runs
// cuBLASLt float32 products (no TF32) whose summation order differs from
// OpenBLAS': with hidden 256 and inter 96 the relative error of each product
// is a few float32 ulps times sqrt(K), ~1e-6; 1e-5 leaves a margin for the
// SiLU between the two products. Rows past the counts are not compared (the
// contract says they are never read).
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "tests/kernels/cuda/cuda_test_util.h"

namespace moeserve::testing {
namespace {

using CudaMoeTest = CudaOpsTest;

struct Table {
  std::vector<int32_t> slots;   // [experts * max_replicas]
  std::vector<int32_t> counts;  // [experts]
  int64_t experts, max_replicas, ranks, slots_per_rank;
};

// Each expert gets 1..max_replicas distinct slots; the slots left over stay empty.
Table RandomTable(int64_t experts, int64_t max_replicas, int64_t ranks, int64_t slots_per_rank,
                  uint32_t seed) {
  std::mt19937 rng(seed);
  Table t{std::vector<int32_t>(static_cast<size_t>(experts * max_replicas), -1),
          std::vector<int32_t>(static_cast<size_t>(experts)),
          experts,
          max_replicas,
          ranks,
          slots_per_rank};
  std::vector<int32_t> free(static_cast<size_t>(ranks * slots_per_rank));
  std::iota(free.begin(), free.end(), 0);
  std::shuffle(free.begin(), free.end(), rng);
  size_t next = 0;
  for (int64_t e = 0; e < experts; ++e) {
    const size_t left = free.size() - next - static_cast<size_t>(experts - e - 1);
    const auto count = static_cast<int32_t>(
        std::min<size_t>({static_cast<size_t>(1 + rng() % max_replicas), left}));
    t.counts[static_cast<size_t>(e)] = count;
    for (int32_t j = 0; j < count; ++j)
      t.slots[static_cast<size_t>(e * max_replicas + j)] = free[next++];
  }
  return t;
}

// top_k distinct experts per token.
std::vector<int32_t> RandomRouting(int64_t tokens, int64_t top_k, int64_t experts, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids;
  std::vector<int32_t> all(static_cast<size_t>(experts));
  std::iota(all.begin(), all.end(), 0);
  for (int64_t t = 0; t < tokens; ++t) {
    std::shuffle(all.begin(), all.end(), rng);
    ids.insert(ids.end(), all.begin(), all.begin() + top_k);
  }
  return ids;
}

TEST_F(CudaMoeTest, DispatchLayoutMatchesTheCpuExactlyWithReplicasAndEmptySlots) {
  for (int32_t rank : {0, 1, 2}) {
    const int64_t tokens = 37, top_k = 4, experts = 9, hidden = 96, capacity = tokens + 3;
    const Table table = RandomTable(experts, 3, 3, 5, 100 + rank);  // 15 slots, some empty
    const int64_t slots = table.ranks * table.slots_per_rank;
    const std::vector<int32_t> ids = RandomRouting(tokens, top_k, experts, 200 + rank);
    TwinMatrix x(tokens, hidden, 300 + rank, 8, 4);
    TwinMatrix send(slots * capacity, hidden, 400 + rank);
    const MoeSlotTable host_table{table.slots.data(), table.counts.data(), experts,
                                  table.max_replicas, table.ranks,         table.slots_per_rank};
    std::vector<int32_t> counts(static_cast<size_t>(slots), -7), rows(ids.size(), -7);
    std::vector<int64_t> load(static_cast<size_t>(experts), 5);  // accumulates
    // Rank 2 leaves its last 5 tokens out, as a padded bucket does.
    const std::vector<int32_t> in_use =
        rank == 2 ? std::vector<int32_t>{static_cast<int32_t>(tokens - 5)} : std::vector<int32_t>{};
    cpu_->MoeDispatchLayout(x.host_view(), ids, top_k, host_table, rank, capacity, send.host_view(),
                            counts, rows, load, in_use);

    DeviceArray<int32_t> dev_ids(ids), dev_slots(table.slots), dev_rcounts(table.counts);
    DeviceArray<int32_t> dev_counts(std::vector<int32_t>(static_cast<size_t>(slots), -7));
    DeviceArray<int32_t> dev_rows(std::vector<int32_t>(ids.size(), -7));
    DeviceArray<int64_t> dev_load(std::vector<int64_t>(static_cast<size_t>(experts), 5));
    const MoeSlotTable dev_table{dev_slots.data(),   dev_rcounts.data(), experts,
                                 table.max_replicas, table.ranks,        table.slots_per_rank};
    DeviceArray<int32_t> dev_in_use(in_use);
    gpu_->MoeDispatchLayout(x.device_view(), dev_ids.cspan(), top_k, dev_table, rank, capacity,
                            send.device_view(), dev_counts.span(), dev_rows.span(), dev_load.span(),
                            in_use.empty() ? std::span<const int32_t>() : dev_in_use.cspan());
    Sync();
    EXPECT_EQ(dev_counts.ToHost(), counts) << "rank " << rank;
    EXPECT_EQ(dev_rows.ToHost(), rows) << "rank " << rank;
    EXPECT_EQ(dev_load.ToHost(), load) << "rank " << rank;
    // Rows inside the counts are copies: equal to the bit.
    const std::vector<float> got = send.DeviceElements(), want = send.HostElements();
    for (int64_t s = 0; s < slots; ++s) {
      for (int32_t i = 0; i < counts[static_cast<size_t>(s)]; ++i) {
        const int64_t r = s * capacity + i;
        ASSERT_TRUE(std::equal(got.begin() + r * hidden, got.begin() + (r + 1) * hidden,
                               want.begin() + r * hidden))
            << "rank " << rank << " send row " << r;
      }
    }
  }
}

TEST_F(CudaMoeTest, CombineReduceIsBitExactWithTiesAndWithoutShared) {
  const int64_t tokens = 29, top_k = 6, hidden = 7168, combined_rows = 50;
  std::mt19937 rng(7);
  std::vector<int32_t> rows, ids;
  for (int64_t p = 0; p < tokens * top_k; ++p) {
    rows.push_back(static_cast<int32_t>(rng() % combined_rows));
    ids.push_back(static_cast<int32_t>(rng() % 5));  // ties: ordered by pair
  }
  const std::vector<float> gains = RandomVector(rows.size(), 8);
  DeviceArray<int32_t> dev_rows(rows), dev_ids(ids);
  DeviceArray<float> dev_gains(gains);
  TwinMatrix combined(combined_rows, hidden, 9, 16, 8);
  for (bool with_shared : {true, false}) {
    TwinMatrix shared(tokens, hidden, 10);
    TwinMatrix out(tokens, hidden, 11, 4, 0);
    const ConstMatView host_shared =
        with_shared ? ConstMatView(shared.host_view()) : ConstMatView{};
    const ConstMatView dev_shared =
        with_shared ? ConstMatView(shared.device_view()) : ConstMatView{};
    cpu_->MoeCombineReduce(combined.host_view(), rows, ids, gains, top_k, host_shared,
                           out.host_view());
    gpu_->MoeCombineReduce(combined.device_view(), dev_rows.cspan(), dev_ids.cspan(),
                           dev_gains.cspan(), top_k, dev_shared, out.device_view());
    Sync();
    EXPECT_EQ(out.DeviceElements(), out.HostElements()) << "with_shared " << with_shared;
  }
}

TEST_F(CudaMoeTest, GroupedGatedFfnMatchesTheCpuInsideTheCounts) {
  const int64_t sources = 3, local = 4, capacity = 5, hidden = 256, inter = 96;
  std::mt19937 rng(21);
  std::vector<int32_t> counts;
  for (int64_t g = 0; g < sources * local; ++g) counts.push_back(static_cast<int32_t>(rng() % 6));
  counts[1] = 0;         // an empty group
  counts[2] = capacity;  // a full one
  std::vector<Tensor> host_w, dev_w;
  for (int64_t s = 0; s < local; ++s) {
    for (int k = 0; k < 3; ++k) {
      const bool down = k == 2;
      host_w.push_back(RandomTensor(
          down ? std::vector<int64_t>{hidden, inter} : std::vector<int64_t>{inter, hidden},
          static_cast<uint32_t>(30 + 3 * s + k), 0.1f));
      dev_w.push_back(Dev(host_w.back()));
    }
  }
  std::vector<ExpertFfnWeights> host_experts, dev_experts;
  for (int64_t s = 0; s < local; ++s) {
    const auto i = static_cast<size_t>(3 * s);
    host_experts.push_back({&host_w[i], &host_w[i + 1], &host_w[i + 2]});
    dev_experts.push_back({&dev_w[i], &dev_w[i + 1], &dev_w[i + 2]});
  }
  host_experts[2] = dev_experts[2] = ExpertFfnWeights{};  // not loaded: zero rows
  const int64_t rows = sources * local * capacity;
  TwinMatrix x(rows, hidden, 40);
  TwinMatrix out(rows, hidden, 41);
  DeviceArray<int32_t> dev_counts(counts);
  cpu_->GroupedGatedFfn(x.host_view(), counts, sources, capacity, host_experts, out.host_view());
  gpu_->GroupedGatedFfn(x.device_view(), dev_counts.cspan(), sources, capacity, dev_experts,
                        out.device_view());
  Sync();
  const std::vector<float> got = out.DeviceElements(), all_want = out.HostElements();
  std::vector<float> inside_got, inside_want;
  for (int64_t g = 0; g < sources * local; ++g) {
    for (int32_t i = 0; i < counts[static_cast<size_t>(g)]; ++i) {
      const int64_t r = g * capacity + i;
      inside_got.insert(inside_got.end(), got.begin() + r * hidden, got.begin() + (r + 1) * hidden);
      inside_want.insert(inside_want.end(), all_want.begin() + r * hidden,
                         all_want.begin() + (r + 1) * hidden);
    }
  }
  ASSERT_FALSE(inside_want.empty());
  EXPECT_LT(RelativeError(inside_got, inside_want), 1e-5);
}

}  // namespace
}  // namespace moeserve::testing
