// The CPU backend's execution model (kernels/stream.h): streams run their
// work in order on threads of their own, events order streams, failures
// propagate without hangs, and a captured graph replays the same work over
// the same buffers. The engine's correctness on the GPU rests on these being
// the same semantics as CUDA's, so they are tested here, where CI runs.
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/stream.h"
#include "kernels/workspace.h"

namespace moeserve {
namespace {

using std::chrono::microseconds;

TEST(CpuStreamTest, WorkRunsInQueueOrderAfterTheHostReturns) {
  auto backend = CreateCpuBackend();
  auto stream = backend->CreateStream();
  std::vector<int> order;  // written by the stream's thread only
  std::atomic<bool> release{false};
  stream->HostFunction([&] {
    while (!release.load()) std::this_thread::yield();
    order.push_back(0);
    return absl::OkStatus();
  });
  for (int i = 1; i < 5; ++i) {
    stream->HostFunction([&order, i] {
      order.push_back(i);
      return absl::OkStatus();
    });
  }
  // The host got here while the first item still blocks the stream.
  release = true;
  ASSERT_TRUE(stream->Synchronize().ok());
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST(CpuStreamTest, CopiesReadTheHostWhenTheStreamGetsThere) {
  auto backend = CreateCpuBackend();
  auto stream = backend->CreateStream();
  auto device = backend->Allocate(sizeof(int));
  ASSERT_TRUE(device.ok());
  std::atomic<bool> release{false};
  stream->HostFunction([&] {
    while (!release.load()) std::this_thread::yield();
    return absl::OkStatus();
  });
  int host = 1;
  stream->CopyToDevice(device->get(), &host, sizeof host);
  host = 2;  // before the stream reached the copy: the copy sees 2
  release = true;
  int back = 0;
  stream->CopyToHost(&back, device->get(), sizeof back);
  ASSERT_TRUE(stream->Synchronize().ok());
  EXPECT_EQ(back, 2);
}

TEST(CpuStreamTest, AnEventOrdersOneStreamAfterAnother) {
  CpuBackendOptions slow;
  slow.stream.delay_per_item = microseconds(20000);
  auto slow_backend = CreateCpuBackend(slow);
  auto backend = CreateCpuBackend();
  auto producer = slow_backend->CreateStream();
  auto consumer = backend->CreateStream();
  auto ready = backend->CreateEvent();
  std::atomic<int> value{0};
  producer->HostFunction([&] {
    value = 42;
    return absl::OkStatus();
  });
  producer->Record(*ready);
  int seen_with_wait = -1;
  consumer->Wait(*ready);
  consumer->HostFunction([&] {
    seen_with_wait = value.load();
    return absl::OkStatus();
  });
  ASSERT_TRUE(consumer->Synchronize().ok());
  // The producer sleeps 20 ms before its item; without the wait the
  // consumer would read 0.
  EXPECT_EQ(seen_with_wait, 42);
  EXPECT_TRUE(consumer->times().measured);
  ASSERT_TRUE(ready->Synchronize().ok());
}

TEST(CpuStreamTest, AWaitQueuedBeforeAReRecordWaitsForTheEarlierPoint) {
  auto backend = CreateCpuBackend();
  auto a = backend->CreateStream();
  auto b = backend->CreateStream();
  auto event = backend->CreateEvent();
  std::atomic<bool> release{false};
  a->Record(*event);  // empty queue: complete at once
  b->Wait(*event);
  a->HostFunction([&] {
    while (!release.load()) std::this_thread::yield();
    return absl::OkStatus();
  });
  a->Record(*event);                   // the later point is blocked until release
  ASSERT_TRUE(b->Synchronize().ok());  // returns: b waits for the first point only
  release = true;
  ASSERT_TRUE(a->Synchronize().ok());
}

TEST(CpuStreamTest, AFailureSkipsLaterWorkAndReachesWaitingStreams) {
  auto backend = CreateCpuBackend();
  auto comm = backend->CreateStream();
  auto compute = backend->CreateStream();
  auto done = backend->CreateEvent();
  comm->HostFunction([] { return absl::UnavailableError("peer lost"); });
  bool ran_after_failure = false;
  comm->HostFunction([&] {
    ran_after_failure = true;
    return absl::OkStatus();
  });
  comm->Record(*done);
  compute->Wait(*done);
  bool compute_ran = false;
  compute->HostFunction([&] {
    compute_ran = true;
    return absl::OkStatus();
  });
  EXPECT_EQ(compute->Synchronize().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(comm->Synchronize().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(done->Synchronize().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(ran_after_failure);
  EXPECT_FALSE(compute_ran);
}

TEST(CpuStreamTest, AReplayedGraphEqualsEagerWorkAndSeesNewInputs) {
  auto backend = CreateCpuBackend();
  auto stream = backend->CreateStream();
  auto ops = backend->CreateOps(*stream);
  // y = x w^T then y += x: inputs and outputs live in buffers the graph keeps.
  auto x = backend->AllocateTensor(DType::kF32, {2, 3});
  auto w = backend->AllocateTensor(DType::kF32, {3, 3});
  auto y = backend->AllocateTensor(DType::kF32, {2, 3});
  ASSERT_TRUE(x.ok() && w.ok() && y.ok());
  const std::vector<float> weights = {1, 2, 0, 0, 1, 0, 3, 0, 1};
  stream->CopyToDevice(w->raw(), weights.data(), weights.size() * sizeof(float));
  auto queue_step = [&] {
    ops->Linear(x->mat(), *w, y->mat());
    ops->Add(x->mat(), y->mat());
  };
  auto run = [&](const std::vector<float>& input, Graph* graph) {
    stream->CopyToDevice(x->raw(), input.data(), input.size() * sizeof(float));
    if (graph != nullptr) {
      EXPECT_TRUE(graph->Launch(*stream).ok());
    } else {
      queue_step();
    }
    std::vector<float> out(6);
    stream->CopyToHost(out.data(), y->raw(), out.size() * sizeof(float));
    EXPECT_TRUE(stream->Synchronize().ok());
    return out;
  };
  ASSERT_TRUE(stream->BeginCapture().ok());
  queue_step();
  auto graph = stream->EndCapture();
  ASSERT_TRUE(graph.ok()) << graph.status();
  EXPECT_EQ((*graph)->size(), 2u);
  for (const std::vector<float>& input :
       {std::vector<float>{1, 2, 3, 4, 5, 6}, std::vector<float>{-1, 0, 2, 7, 1, 1}}) {
    EXPECT_EQ(run(input, graph->get()), run(input, nullptr));
  }
}

TEST(CpuStreamTest, CaptureRefusesEventsAndSynchronize) {
  auto backend = CreateCpuBackend();
  auto stream = backend->CreateStream();
  auto event = backend->CreateEvent();
  ASSERT_TRUE(stream->BeginCapture().ok());
  EXPECT_EQ(stream->Synchronize().code(), absl::StatusCode::kFailedPrecondition);
  stream->Record(*event);
  EXPECT_EQ(stream->EndCapture().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(stream->EndCapture().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(WorkspaceTest, PlanningMeasuresWithoutMemoryAndTheRealOneHoldsThePlan) {
  auto planning = Workspace::ForPlanning();
  const MatView a = planning->Matrix(10, 3);
  const Workspace::Mark mark = planning->mark();
  planning->Array<int32_t>(100);
  planning->Release(mark);
  planning->Array<int64_t>(7);
  EXPECT_EQ(a.data, nullptr);
  EXPECT_EQ(planning->high_water_bytes(), 256u + 512u);  // 120 B and 400 B, 256-aligned
  auto backend = CreateCpuBackend();
  const int64_t before = backend->allocations();
  auto ws = Workspace::Create(*backend, planning->high_water_bytes());
  ASSERT_TRUE(ws.ok());
  EXPECT_EQ(backend->allocations(), before + 1);
  for (int step = 0; step < 3; ++step) {
    (*ws)->Reset();
    EXPECT_NE((*ws)->Matrix(10, 3).data, nullptr);
    (*ws)->Array<int32_t>(100);
  }
  EXPECT_EQ(backend->allocations(), before + 1);
}

TEST(WorkspaceDeathTest, AStepBeyondThePlanAbortsNamingTheSizes) {
  auto backend = CreateCpuBackend();
  auto ws = Workspace::Create(*backend, 256);
  ASSERT_TRUE(ws.ok());
  EXPECT_DEATH((*ws)->Array<float>(1000), "more than its planned workspace");
}

TEST(DeviceIdTest, ParsesTheForms) {
  EXPECT_EQ(ParseDeviceId("cpu")->ToString(), "cpu");
  EXPECT_EQ(ParseDeviceId("cuda")->ToString(), "cuda:0");
  EXPECT_EQ(ParseDeviceId("cuda:3")->index, 3);
  for (const char* bad : {"gpu", "cuda:", "cuda:-1", "cuda:x", ""}) {
    const auto d = ParseDeviceId(bad);
    ASSERT_FALSE(d.ok()) << bad;
    EXPECT_NE(d.status().message().find("cpu, cuda, cuda:N"), std::string::npos);
  }
}

}  // namespace
}  // namespace moeserve
