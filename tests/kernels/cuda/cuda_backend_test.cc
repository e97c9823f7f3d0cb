// The CUDA backend (kernels/cuda/cuda_backend.h) against the execution model
// of kernels/stream.h, as the CPU twin's tests check it: stream order, event
// waits across streams, failures that host functions report, capture and
// replay. Skipped without a GPU.
#include "kernels/cuda/cuda_backend.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/match.h"

namespace moeserve {
namespace {

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto backend = cuda::CreateCudaBackend(0);
    if (!backend.ok() && backend.status().code() == absl::StatusCode::kUnavailable) {
      GTEST_SKIP() << backend.status().message();  // "cuda:0: no usable CUDA device ..."
    }
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = *std::move(backend);
  }
  std::shared_ptr<std::byte[]> Alloc(size_t bytes) {
    auto m = backend_->Allocate(bytes);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? *std::move(m) : nullptr;
  }

  std::unique_ptr<Backend> backend_;
};

TEST_F(CudaBackendTest, NamesTheDeviceAndRefusesMissingOnes) {
  EXPECT_TRUE(absl::StartsWith(backend_->name(), "cuda:0 (")) << backend_->name();
  EXPECT_EQ(backend_->device(), (DeviceId{DeviceKind::kCuda, 0}));
  EXPECT_FALSE(backend_->host_accessible());
  auto missing = cuda::CreateCudaBackend(4096);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(missing.status().message(), "cuda:4096")) << missing.status();
  auto huge = backend_->Allocate(size_t{1} << 50);  // a petabyte
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(huge.status().message(), "cuda:0")) << huge.status();
  EXPECT_EQ(backend_->allocations(), 1);
}

TEST_F(CudaBackendTest, WorkRunsInQueueOrder) {
  auto stream = backend_->CreateStream();
  ASSERT_NE(cuda::NativeStream(*stream), nullptr);
  const size_t n = 1 << 20;
  auto a = Alloc(n), b = Alloc(n);
  std::vector<uint8_t> src(n, 7), dst(n, 0);
  stream->Fill(a.get(), 1, n);
  stream->CopyToDevice(a.get(), src.data(), n / 2);  // after the fill: first half 7
  stream->CopyOnDevice(b.get(), a.get(), n);
  stream->CopyToHost(dst.data(), b.get(), n);
  ASSERT_TRUE(stream->Synchronize().ok());
  EXPECT_EQ(dst[0], 7);
  EXPECT_EQ(dst[n / 2 - 1], 7);
  EXPECT_EQ(dst[n / 2], 1);
  EXPECT_EQ(dst[n - 1], 1);
  EXPECT_FALSE(stream->times().measured);
}

TEST_F(CudaBackendTest, AnEventWaitOrdersWorkAcrossStreams) {
  auto producer = backend_->CreateStream(), consumer = backend_->CreateStream();
  auto event = backend_->CreateEvent();
  auto buf = Alloc(sizeof(int));
  int value = 0, seen = 0;
  producer->Fill(buf.get(), 0, sizeof(int));
  producer->HostFunction([] {  // holds the producer back
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    return absl::OkStatus();
  });
  value = 42;
  producer->CopyToDevice(buf.get(), &value, sizeof(int));
  producer->Record(*event);
  consumer->Wait(*event);
  consumer->CopyToHost(&seen, buf.get(), sizeof(int));
  ASSERT_TRUE(consumer->Synchronize().ok());
  EXPECT_EQ(seen, 42);
  EXPECT_TRUE(event->Synchronize().ok());
  EXPECT_TRUE(backend_->CreateEvent()->Synchronize().ok());  // never recorded: complete
}

TEST_F(CudaBackendTest, AHostFunctionFailureFailsTheStreamAndItsWaiters) {
  auto failing = backend_->CreateStream(), waiter = backend_->CreateStream();
  auto event = backend_->CreateEvent();
  bool later_ran = false;
  failing->HostFunction([] { return absl::UnavailableError("peer lost"); });
  failing->HostFunction([&] {
    later_ran = true;
    return absl::OkStatus();
  });
  failing->Record(*event);
  waiter->Wait(*event);
  const absl::Status s = failing->Synchronize();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_FALSE(later_ran) << "work after a failure must be skipped";
  EXPECT_EQ(failing->Synchronize().code(), absl::StatusCode::kUnavailable) << "sticky";
  EXPECT_EQ(event->Synchronize().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(waiter->Synchronize().code(), absl::StatusCode::kUnavailable);
}

TEST_F(CudaBackendTest, CaptureAndReplayEqualsEagerWork) {
  auto stream = backend_->CreateStream();
  auto ops = backend_->CreateOps(*stream);
  const int64_t rows = 4, cols = 300;
  const size_t bytes = rows * cols * sizeof(float);
  auto x = Alloc(bytes), y = Alloc(bytes);
  std::vector<float> hx(rows * cols), hy(rows * cols, 0.0f), eager(rows * cols),
      replayed(rows * cols);
  for (size_t i = 0; i < hx.size(); ++i) hx[i] = 0.25f * static_cast<float>(i % 17) - 1.0f;
  const MatView vx{reinterpret_cast<float*>(x.get()), rows, cols, cols};
  const MatView vy{reinterpret_cast<float*>(y.get()), rows, cols, cols};
  int host_calls = 0;
  const auto work = [&] {
    ops->Add(vx, vy);  // y += x
    stream->HostFunction([&] {
      ++host_calls;
      return absl::OkStatus();
    });
    ops->Add(vx, vy);
  };
  stream->CopyToDevice(x.get(), hx.data(), bytes);
  stream->CopyToDevice(y.get(), hy.data(), bytes);
  work();
  work();
  stream->CopyToHost(eager.data(), y.get(), bytes);
  ASSERT_TRUE(stream->Synchronize().ok());
  EXPECT_EQ(host_calls, 2);

  stream->CopyToDevice(y.get(), hy.data(), bytes);
  ASSERT_TRUE(stream->Synchronize().ok());
  ASSERT_TRUE(stream->BeginCapture().ok());
  work();
  auto graph = stream->EndCapture();
  ASSERT_TRUE(graph.ok()) << graph.status();
  EXPECT_GE((*graph)->size(), 3u);
  EXPECT_EQ(host_calls, 2) << "captured work must not run";
  auto other = backend_->CreateStream();  // a graph replays on any stream of the backend
  ASSERT_TRUE((*graph)->Launch(*stream).ok());
  ASSERT_TRUE(stream->Synchronize().ok());
  ASSERT_TRUE((*graph)->Launch(*other).ok());
  other->CopyToHost(replayed.data(), y.get(), bytes);
  ASSERT_TRUE(other->Synchronize().ok());
  EXPECT_EQ(host_calls, 4);
  EXPECT_EQ(std::memcmp(replayed.data(), eager.data(), bytes), 0);

  // As on the CPU: events may not be captured.
  auto event = backend_->CreateEvent();
  ASSERT_TRUE(stream->BeginCapture().ok());
  stream->Record(*event);
  EXPECT_EQ(stream->EndCapture().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(CudaBackendTest, AHostFunctionFailureInsideAGraphFailsTheLaunchingStream) {
  auto stream = backend_->CreateStream();
  ASSERT_TRUE(stream->BeginCapture().ok());
  stream->HostFunction([] { return absl::DataLossError("bad step"); });
  auto graph = stream->EndCapture();
  ASSERT_TRUE(graph.ok()) << graph.status();
  auto other = backend_->CreateStream();
  ASSERT_TRUE((*graph)->Launch(*other).ok());
  EXPECT_EQ(other->Synchronize().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(stream->Synchronize().ok());
}

}  // namespace
}  // namespace moeserve
