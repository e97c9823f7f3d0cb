// The NCCL communicator on real GPUs: one rank with a real NCCL communicator
// (counts and rows round trip through itself), two ranks when two GPUs are
// visible, and a group that cannot form. Skipped without a GPU.
#include "runtime/parallel/nccl_communicator.h"

#include <cuda_runtime_api.h>

#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "gloo/rendezvous/hash_store.h"
#include "gtest/gtest.h"
#include "kernels/cuda/cuda_backend.h"

namespace moeserve {
namespace {

int VisibleGpus() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}

// One rank's exchange of `groups` groups of `capacity` rows of `width` floats
// with every peer, the rows filled with (sender, receiver, group, row, col)
// values, and the check of what it received.
struct RowsCase {
  int64_t groups = 3, capacity = 4, width = 40;
  int32_t Count(int from, int to, int64_t g) const {
    return static_cast<int32_t>((from * 7 + to * 3 + g) % (capacity + 1));
  }
  static float Value(int from, int to, int64_t g, int64_t i, int64_t c) {
    return static_cast<float>(from * 100000 + to * 10000 + g * 1000 + i * 100 + c);
  }
  // Runs one exchange for `rank` of `size` on backend `backend`.
  void Run(Backend& backend, Communicator& comm) const {
    const int rank = comm.rank(), size = comm.size();
    const int64_t chunk = groups * capacity * width;
    std::vector<float> send(static_cast<size_t>(size * chunk), -1.0f);
    std::vector<int32_t> send_counts(static_cast<size_t>(size * groups));
    for (int p = 0; p < size; ++p) {
      for (int64_t g = 0; g < groups; ++g) {
        send_counts[static_cast<size_t>(p * groups + g)] = Count(rank, p, g);
        for (int64_t i = 0; i < capacity; ++i) {
          for (int64_t c = 0; c < width; ++c) {
            send[static_cast<size_t>(p * chunk + (g * capacity + i) * width + c)] =
                Value(rank, p, g, i, c);
          }
        }
      }
    }
    auto stream = backend.CreateStream();
    auto d_send = *backend.Allocate(send.size() * sizeof(float));
    auto d_recv = *backend.Allocate(send.size() * sizeof(float));
    auto d_sc = *backend.Allocate(send_counts.size() * sizeof(int32_t));
    auto d_rc = *backend.Allocate(send_counts.size() * sizeof(int32_t));
    stream->CopyToDevice(d_send.get(), send.data(), send.size() * sizeof(float));
    stream->CopyToDevice(d_sc.get(), send_counts.data(), send_counts.size() * sizeof(int32_t));
    Communicator::RowExchange ex;
    ex.send = reinterpret_cast<const float*>(d_send.get());
    ex.send_counts = reinterpret_cast<const int32_t*>(d_sc.get());
    ex.recv = reinterpret_cast<float*>(d_recv.get());
    ex.recv_counts = reinterpret_cast<int32_t*>(d_rc.get());
    ex.groups = groups;
    ex.capacity = capacity;
    ex.width = width;
    comm.QueueAllToAllRows(*stream, ex);
    std::vector<float> recv(send.size());
    std::vector<int32_t> recv_counts(send_counts.size());
    stream->CopyToHost(recv.data(), d_recv.get(), recv.size() * sizeof(float));
    stream->CopyToHost(recv_counts.data(), d_rc.get(), recv_counts.size() * sizeof(int32_t));
    ASSERT_TRUE(stream->Synchronize().ok());
    for (int p = 0; p < size; ++p) {
      for (int64_t g = 0; g < groups; ++g) {
        const int32_t n = recv_counts[static_cast<size_t>(p * groups + g)];
        ASSERT_EQ(n, Count(p, rank, g)) << "rank " << rank << " from " << p << " group " << g;
        for (int32_t i = 0; i < n; ++i) {
          for (int64_t c = 0; c < width; ++c) {
            ASSERT_EQ(recv[static_cast<size_t>(p * chunk + (g * capacity + i) * width + c)],
                      Value(p, rank, g, i, c));
          }
        }
      }
    }
  }
};

class NcclCommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (VisibleGpus() == 0) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(NcclCommunicatorTest, OneRankRoundTripsCountsValuesAndRows) {
  auto store = std::make_shared<gloo::rendezvous::HashStore>();
  NcclOptions options;
  options.timeout = std::chrono::milliseconds(20000);
  auto comm = NcclCommunicator::Create(options, store);
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ((*comm)->name(), "nccl");
  std::vector<int64_t> counts = {5}, got = {0};
  ASSERT_TRUE((*comm)->AllToAllCounts(counts, got).ok());
  EXPECT_EQ(got, counts);
  const std::vector<float> values = {1.5f, -2.0f, 3.25f};
  std::vector<float> back(3);
  const std::vector<int64_t> n = {3};
  ASSERT_TRUE((*comm)->AllToAllV(values, n, back, n).ok());
  EXPECT_EQ(back, values);
  auto backend = cuda::CreateCudaBackend(0);
  ASSERT_TRUE(backend.ok()) << backend.status();
  RowsCase().Run(**backend, **comm);
}

TEST_F(NcclCommunicatorTest, TwoRanksOnTwoGpusExchangeRows) {
  if (VisibleGpus() < 2) GTEST_SKIP() << "needs two GPUs, " << VisibleGpus() << " visible";
  auto store = std::make_shared<gloo::rendezvous::HashStore>();
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([r, store] {
      NcclOptions options;
      options.rank = r;
      options.size = 2;
      options.device = r;
      options.generation = 3;
      auto comm = NcclCommunicator::Create(options, store);
      ASSERT_TRUE(comm.ok()) << comm.status();
      auto backend = cuda::CreateCudaBackend(r);
      ASSERT_TRUE(backend.ok()) << backend.status();
      RowsCase().Run(**backend, **comm);
    });
  }
  for (auto& t : threads) t.join();
}

TEST_F(NcclCommunicatorTest, AGroupWhoseRankZeroNeverComesFailsWithinTheTimeout) {
  auto store = std::make_shared<gloo::rendezvous::HashStore>();
  NcclOptions options;
  options.rank = 1;
  options.size = 2;
  options.timeout = std::chrono::milliseconds(300);
  auto comm = NcclCommunicator::Create(options, store);
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded) << comm.status();
  EXPECT_TRUE(absl::StrContains(comm.status().message(), "rank 0")) << comm.status();
}

}  // namespace
}  // namespace moeserve
