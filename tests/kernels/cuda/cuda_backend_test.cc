// The CUDA backend (kernels/cuda/cuda_backend.h) against the execution model
// of kernels/stream.h, as the CPU twin's tests check it: stream order, event
// waits across streams, failures that host functions report, capture and
// replay. And weights: LoadWeight keeps the checkpoint dtype where the op
// set takes it, and refuses FP8 weights it has no product for. Skipped
// without a GPU.
#include "kernels/cuda/cuda_backend.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "kernels/cuda/device_tensor.h"
#include "kernels/host_weight.h"

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

// ---------------------------------------------------------------------------
// Weights in backend memory (LoadWeight).

// A host weight over `bytes` (which must outlive it).
HostWeight Weight(DType dtype, const std::vector<int64_t>& shape, const void* bytes,
                  const float* scale_inv = nullptr, int64_t block = 0) {
  return {"test.weight", dtype, shape, bytes, scale_inv, block};
}

std::vector<uint8_t> Bytes(const Tensor& device, size_t bytes, size_t offset = 0) {
  std::vector<uint8_t> out(bytes);
  EXPECT_TRUE(
      cuda::CopyToHost(out.data(), static_cast<const char*>(device.raw()) + offset, bytes).ok());
  return out;
}

template <class T>
std::vector<uint8_t> HostBytes(const std::vector<T>& v) {
  std::vector<uint8_t> out(v.size() * sizeof(T));
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

TEST_F(CudaBackendTest, LoadWeightKeepsTheCheckpointDtype) {
  std::vector<float> f32(3 * 5);
  for (size_t i = 0; i < f32.size(); ++i) f32[i] = 0.25f * static_cast<float>(i) - 1.0f;
  std::vector<uint16_t> bf16(4 * 8);
  for (size_t i = 0; i < bf16.size(); ++i) bf16[i] = F32ToBf16(0.5f * static_cast<float>(i) - 3);

  const std::vector<int64_t> f32_shape = {3, 5}, bf16_shape = {4, 8}, vec_shape = {32};
  auto m = backend_->LoadWeight(Weight(DType::kF32, f32_shape, f32.data()), WeightUse::kMatrix);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->device(), Device::kCuda);
  EXPECT_EQ(m->dtype(), DType::kF32);
  EXPECT_EQ(Bytes(*m, f32.size() * 4), HostBytes(f32));

  for (WeightUse use : {WeightUse::kMatrix, WeightUse::kEmbedding, WeightUse::kMlaKvB}) {
    auto b = backend_->LoadWeight(Weight(DType::kBF16, bf16_shape, bf16.data()), use);
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(b->dtype(), DType::kBF16) << static_cast<int>(use);
    EXPECT_EQ(b->shape(), bf16_shape);
    EXPECT_EQ(Bytes(*b, bf16.size() * 2), HostBytes(bf16));
  }
  // Vectors (norms, the routing bias) are float32 whatever they were.
  auto v = backend_->LoadWeight(Weight(DType::kBF16, vec_shape, bf16.data()), WeightUse::kVector);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->dtype(), DType::kF32);
  std::vector<float> widened(bf16.size());
  for (size_t i = 0; i < bf16.size(); ++i) widened[i] = Bf16ToF32(bf16[i]);
  EXPECT_EQ(Bytes(*v, widened.size() * 4), HostBytes(widened));
  EXPECT_GT(backend_->allocations(), 0);  // weights are the backend's memory
}

TEST_F(CudaBackendTest, Fp8WeightsStayFp8WithTheirBlockScales) {
  const int64_t rows = 256, cols = 384;  // 2 x 3 blocks
  const std::vector<int64_t> shape = {rows, cols};
  std::vector<uint8_t> codes(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<uint8_t>(0x30 + i % 16);
  const std::vector<float> scales = {0.5f, 1, 2, 4, 8, 0.25f};
  const HostWeight w = Weight(DType::kF8E4M3, shape, codes.data(), scales.data(), 128);

  auto q = backend_->LoadWeight(w, WeightUse::kMatrix);
  if (!q.ok() && q.status().code() == absl::StatusCode::kFailedPrecondition) {
    // A GPU without the block-scaled FP8 product: the refusal must say why.
    EXPECT_TRUE(absl::StrContains(q.status().message(), "compute capability")) << q.status();
    EXPECT_TRUE(absl::StrContains(q.status().message(), "sm_90")) << q.status();
    GTEST_SKIP() << q.status().message();
  }
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->dtype(), DType::kF8E4M3);
  EXPECT_EQ(q->shape(), shape);
  EXPECT_EQ(Bytes(*q, codes.size()), codes);
  // The scales in cuBLASLt's layout: rows of Fp8ScalesPitch(cols) floats.
  const int64_t pitch = cuda::Fp8ScalesPitch(cols);
  std::vector<float> want(static_cast<size_t>(2 * pitch), 0.0f);
  for (int64_t r = 0; r < 2; ++r) {
    for (int64_t c = 0; c < 3; ++c) want[r * pitch + c] = scales[r * 3 + c];
  }
  EXPECT_EQ(Bytes(*q, want.size() * 4, cuda::Fp8ScalesOffset(rows, cols)), HostBytes(want));

  // kv_b_proj: BF16 of the dequantized weight; a vector or an FP8
  // embedding: the dequantized float32.
  auto f32 = HostWeightToF32(w);
  ASSERT_TRUE(f32.ok()) << f32.status();
  auto kvb = backend_->LoadWeight(w, WeightUse::kMlaKvB);
  ASSERT_TRUE(kvb.ok()) << kvb.status();
  EXPECT_EQ(kvb->dtype(), DType::kBF16);
  std::vector<uint16_t> rounded(codes.size());
  for (size_t i = 0; i < rounded.size(); ++i) rounded[i] = F32ToBf16(f32->f32()[i]);
  EXPECT_EQ(Bytes(*kvb, rounded.size() * 2), HostBytes(rounded));
  auto emb = backend_->LoadWeight(w, WeightUse::kEmbedding);
  ASSERT_TRUE(emb.ok()) << emb.status();
  EXPECT_EQ(emb->dtype(), DType::kF32);
  EXPECT_EQ(std::memcmp(Bytes(*emb, f32->nbytes()).data(), f32->raw(), f32->nbytes()), 0);
}

TEST_F(CudaBackendTest, Fp8WeightWithoutAProductIsRefusedAtLoad) {
  // in_features 40: no block-scaled FP8 product exists (K % 16 != 0).
  const std::vector<int64_t> shape = {32, 40};
  std::vector<uint8_t> codes(32 * 40, 0x38);
  const std::vector<float> scale = {1.0f};
  auto q = backend_->LoadWeight(Weight(DType::kF8E4M3, shape, codes.data(), scale.data(), 128),
                                WeightUse::kMatrix);
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.status().code(), absl::StatusCode::kFailedPrecondition) << q.status();
  EXPECT_TRUE(absl::StrContains(q.status().message(), "cuda:0")) << q.status();
  EXPECT_TRUE(absl::StrContains(q.status().message(), "test.weight")) << q.status();
  EXPECT_TRUE(absl::StrContains(q.status().message(), "cuBLASLt")) << q.status();

  // Blocks other than 128x128: cuBLASLt's mode takes those only.
  const std::vector<int64_t> square = {128, 128};
  std::vector<uint8_t> more(128 * 128, 0x38);
  const std::vector<float> scales(4, 1.0f);
  auto b64 = backend_->LoadWeight(Weight(DType::kF8E4M3, square, more.data(), scales.data(), 64),
                                  WeightUse::kMatrix);
  ASSERT_FALSE(b64.ok());
  EXPECT_EQ(b64.status().code(), absl::StatusCode::kInvalidArgument) << b64.status();
  EXPECT_TRUE(absl::StrContains(b64.status().message(), "128x128")) << b64.status();
}

}  // namespace
}  // namespace moeserve
