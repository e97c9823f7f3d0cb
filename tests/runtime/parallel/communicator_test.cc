#include "runtime/parallel/communicator.h"

#include <chrono>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "gloo/rendezvous/hash_store.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "runtime/parallel/gloo_communicator.h"

namespace moeserve {
namespace {

// Runs body(rank, communicator) on `n` threads, each a rank of one Gloo group
// formed through an in-process store over loopback TCP.
void RunGroup(int n, const std::function<void(int, Communicator&)>& body,
              std::chrono::milliseconds timeout = std::chrono::milliseconds(20000)) {
  auto store = std::make_shared<gloo::rendezvous::HashStore>();
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      GlooOptions o;
      o.rank = r;
      o.size = n;
      o.timeout = timeout;
      auto comm = GlooCommunicator::Create(o, store);
      ASSERT_TRUE(comm.ok()) << comm.status();
      body(r, **comm);
    });
  }
  for (auto& t : threads) t.join();
}

// What rank `from` sends rank `to` in round `round`: a count that is often
// zero and values that name sender, receiver and position.
int64_t Count(int from, int to, int round) {
  return (from * 7 + to * 3 + round) % 4 == 0 ? 0 : (from + 2 * to + round) % 5 + 1;
}
float Value(int from, int to, int64_t i) { return static_cast<float>(from * 1000 + to * 100 + i); }

TEST(GlooCommunicatorTest, AllToAllDeliversEveryRanksRowsInRankOrder) {
  for (int n : {1, 2, 4}) {
    RunGroup(n, [n](int rank, Communicator& comm) {
      EXPECT_EQ(comm.rank(), rank);
      EXPECT_EQ(comm.size(), n);
      for (int round = 0; round < 3; ++round) {
        std::vector<int64_t> send_counts(static_cast<size_t>(n)),
            recv_counts(static_cast<size_t>(n));
        std::vector<float> send;
        for (int to = 0; to < n; ++to) {
          send_counts[static_cast<size_t>(to)] = Count(rank, to, round);
          for (int64_t i = 0; i < Count(rank, to, round); ++i) send.push_back(Value(rank, to, i));
        }
        ASSERT_TRUE(comm.AllToAllCounts(send_counts, recv_counts).ok());
        for (int from = 0; from < n; ++from) {
          EXPECT_EQ(recv_counts[static_cast<size_t>(from)], Count(from, rank, round));
        }
        std::vector<float> recv(static_cast<size_t>(
            std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0})));
        ASSERT_TRUE(comm.AllToAllV(send, send_counts, recv, recv_counts).ok());
        size_t k = 0;
        for (int from = 0; from < n; ++from) {
          for (int64_t i = 0; i < Count(from, rank, round); ++i) {
            EXPECT_EQ(recv[k++], Value(from, rank, i)) << "from " << from << " round " << round;
          }
        }
      }
    });
  }
}

TEST(GlooCommunicatorTest, ALostRankFailsTheOthersWithinTheTimeout) {
  const auto start = std::chrono::steady_clock::now();
  RunGroup(
      3,
      [](int rank, Communicator& comm) {
        std::vector<int64_t> send(3, 1), recv(3);
        ASSERT_TRUE(comm.AllToAllCounts(send, recv).ok());
        if (rank == 2) return;  // leaves: its communicator is destroyed
        absl::Status s = comm.AllToAllCounts(send, recv);
        EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
        // Broken for good: the next call fails at once.
        EXPECT_EQ(comm.AllToAllCounts(send, recv).code(), absl::StatusCode::kUnavailable);
      },
      std::chrono::milliseconds(3000));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(15));
}

TEST(GlooCommunicatorTest, FormingAGroupWithAMissingRankTimesOut) {
  auto store = std::make_shared<gloo::rendezvous::HashStore>();
  GlooOptions o;
  o.rank = 0;
  o.size = 2;
  o.timeout = std::chrono::milliseconds(500);
  auto comm = GlooCommunicator::Create(o, store);
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(comm.status().message().find("could not form"), std::string::npos) << comm.status();
}

TEST(GlooCommunicatorTest, RejectsCountsThatDoNotMatchTheGroup) {
  RunGroup(2, [](int, Communicator& comm) {
    std::vector<int64_t> three(3), two(2);
    EXPECT_EQ(comm.AllToAllCounts(three, two).code(), absl::StatusCode::kInvalidArgument);
    std::vector<float> small(1);
    std::vector<int64_t> big = {5, 5};
    EXPECT_EQ(comm.AllToAllV(small, big, small, big).code(), absl::StatusCode::kInvalidArgument);
  });
}

TEST(LocalCommunicatorTest, CopiesAndChecks) {
  LocalCommunicator c;
  std::vector<int64_t> send = {3}, recv = {0};
  ASSERT_TRUE(c.AllToAllCounts(send, recv).ok());
  EXPECT_EQ(recv[0], 3);
  std::vector<float> a = {1, 2, 3}, b(3);
  ASSERT_TRUE(c.AllToAllV(a, send, b, recv).ok());
  EXPECT_EQ(a, b);
  std::vector<int64_t> other = {2};
  EXPECT_EQ(c.AllToAllV(a, send, b, other).code(), absl::StatusCode::kInvalidArgument);
}

TEST(EmulatedLinkTest, EachCollectiveTakesAtLeastLatencyPlusBytesOverBandwidth) {
  EmulatedLink link;
  link.latency_us = 2000;
  link.bandwidth_gbps = 0.001;  // 1 MB/s: 4000 bytes take 4 ms
  auto comm = WithEmulatedLink(std::make_unique<LocalCommunicator>(), link);
  std::vector<float> a(1000), b(1000);
  std::vector<int64_t> counts = {1000};
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(comm->AllToAllV(a, counts, b, counts).ok());
  // Only bytes to other ranks count; a group of one pays the latency only.
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::microseconds(2000));
  EXPECT_NE(comm->name().find("emulated"), std::string::npos);

  RunGroup(2, [&](int, Communicator& inner) {
    // Borrow the group's communicator inside an emulated link.
    struct Borrowed final : Communicator {
      Communicator& c;
      explicit Borrowed(Communicator& x) : c(x) {}
      int rank() const override { return c.rank(); }
      int size() const override { return c.size(); }
      std::string name() const override { return c.name(); }
      absl::Status AllToAllCounts(std::span<const int64_t> s, std::span<int64_t> r) override {
        return c.AllToAllCounts(s, r);
      }
      absl::Status AllToAllV(std::span<const float> s, std::span<const int64_t> sc,
                             std::span<float> r, std::span<const int64_t> rc) override {
        return c.AllToAllV(s, sc, r, rc);
      }
    };
    auto slow = WithEmulatedLink(std::make_unique<Borrowed>(inner), link);
    std::vector<float> send(2000), recv(2000);
    std::vector<int64_t> counts = {1000, 1000};
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(slow->AllToAllV(send, counts, recv, counts).ok());
    EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::microseconds(2000 + 4000));
  });
}

// The MoE exchange on fixed-capacity buffers, queued on a CPU stream: every
// rank gets each peer's rows of its groups and their counts; rows past a
// count are neither sent nor written. Read in place (host-accessible
// buffers) and through whole-buffer host staging (as for GPU buffers), which
// must deliver the same.
TEST(QueueAllToAllRowsTest, DeliversEveryGroupsRowsAndCountsInPlaceAndStaged) {
  constexpr int64_t kGroups = 3, kCapacity = 4, kWidth = 2;
  for (int n : {1, 2, 3}) {
    for (bool host_accessible : {true, false}) {
      RunGroup(n, [&](int rank, Communicator& comm) {
        const int64_t chunk = kGroups * kCapacity * kWidth;
        auto backend = CreateCpuBackend();
        auto stream = backend->CreateStream();
        std::vector<float> send(static_cast<size_t>(n * chunk), -1.0f);
        std::vector<int32_t> send_counts(static_cast<size_t>(n * kGroups));
        for (int to = 0; to < n; ++to) {
          for (int64_t g = 0; g < kGroups; ++g) {
            const auto count = static_cast<int32_t>((rank + to + g) % (kCapacity + 1));
            send_counts[static_cast<size_t>(to * kGroups + g)] = count;
            for (int64_t r = 0; r < count; ++r) {
              for (int64_t c = 0; c < kWidth; ++c) {
                send[static_cast<size_t>(((to * kGroups + g) * kCapacity + r) * kWidth + c)] =
                    Value(rank, to, (g * kCapacity + r) * kWidth + c);
              }
            }
          }
        }
        std::vector<float> recv(send.size(), -7.0f);
        std::vector<int32_t> recv_counts(send_counts.size(), -1);
        Communicator::RowExchange ex;
        ex.send = send.data();
        ex.send_counts = send_counts.data();
        ex.recv = recv.data();
        ex.recv_counts = recv_counts.data();
        ex.groups = kGroups;
        ex.capacity = kCapacity;
        ex.width = kWidth;
        ex.host_accessible = host_accessible;
        comm.QueueAllToAllRows(*stream, ex);
        ASSERT_TRUE(stream->Synchronize().ok());
        for (int from = 0; from < n; ++from) {
          for (int64_t g = 0; g < kGroups; ++g) {
            const auto count = static_cast<int32_t>((from + rank + g) % (kCapacity + 1));
            ASSERT_EQ(recv_counts[static_cast<size_t>(from * kGroups + g)], count);
            for (int64_t r = 0; r < kCapacity; ++r) {
              for (int64_t c = 0; c < kWidth; ++c) {
                const float got =
                    recv[static_cast<size_t>(((from * kGroups + g) * kCapacity + r) * kWidth + c)];
                if (r < count) {
                  EXPECT_EQ(got, Value(from, rank, (g * kCapacity + r) * kWidth + c));
                } else if (host_accessible) {
                  EXPECT_EQ(got, -7.0f) << "a row past the count was written";
                }
              }
            }
          }
        }
      });
    }
  }
}

}  // namespace
}  // namespace moeserve
