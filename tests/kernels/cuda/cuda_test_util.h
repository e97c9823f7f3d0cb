// Helpers for the CUDA op set's tests: a fixture holding both op sets (the
// test skips, saying why, where there is no GPU), device copies of host data,
// and the error measure every comparison uses.
#ifndef MOESERVE_TESTS_KERNELS_CUDA_CUDA_TEST_UTIL_H_
#define MOESERVE_TESTS_KERNELS_CUDA_CUDA_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_tensor.h"
#include "kernels/ops.h"
#include "kernels/seq_table.h"
#include "tests/kernels/kernel_test_util.h"

namespace moeserve::testing {

// Both op sets. SetUp skips the test when CudaOps reports no usable device.
class CudaOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ops = cuda::CudaOps::Create({});
    if (!ops.ok() && ops.status().code() == absl::StatusCode::kUnavailable) {
      GTEST_SKIP() << ops.status().message();  // "no CUDA device: ..."
    }
    ASSERT_TRUE(ops.ok()) << ops.status();
    gpu_ = *std::move(ops);
    cpu_ = CreateCpuOps();
  }
  void Sync() { ASSERT_TRUE(gpu_->Synchronize().ok()); }

  std::unique_ptr<cuda::CudaOps> gpu_;
  std::unique_ptr<Ops> cpu_;
};

// Device copy of a host tensor (same dtype), asserting success.
inline Tensor Dev(const Tensor& host) {
  auto t = cuda::ToDevice(host);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : Tensor();
}

inline Tensor DevBf16(const Tensor& host) {
  auto t = cuda::ToDeviceBf16(host);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : Tensor();
}

// Device copy of host int32 values (kept alive by the tensor).
inline Tensor DevInts(const std::vector<int32_t>& host) {
  Tensor t = Tensor::Empty(DType::kI32, {static_cast<int64_t>(host.size())});
  if (!host.empty()) std::memcpy(t.raw(), host.data(), host.size() * sizeof(int32_t));
  return Dev(t);
}

// A batch's sequence table for both twins: host() for the CPU op set,
// device() over device copies of the same arrays for the CUDA one.
class SeqTables {
 public:
  SeqTables(std::span<const SeqSlice> seqs, int64_t rows, int64_t block_size)
      : table_(HostSeqTable::Build(seqs, rows, block_size)),
        token_begin_(DevInts(table_.token_begin)),
        num_tokens_(DevInts(table_.num_tokens)),
        context_len_(DevInts(table_.context_len)),
        block_tables_(DevInts(table_.block_tables)),
        slots_(DevInts(table_.slots)) {}
  SeqTable host() const { return table_.View(); }
  SeqTable device() const {
    SeqTable t = table_.View();
    t.token_begin = static_cast<const int32_t*>(token_begin_.raw());
    t.num_tokens = static_cast<const int32_t*>(num_tokens_.raw());
    t.context_len = static_cast<const int32_t*>(context_len_.raw());
    t.block_tables = static_cast<const int32_t*>(block_tables_.raw());
    t.slots = static_cast<const int32_t*>(slots_.raw());
    return t;
  }

 private:
  HostSeqTable table_;
  Tensor token_begin_, num_tokens_, context_len_, block_tables_, slots_;
};

// Host float copy of a device F32 tensor.
inline std::vector<float> Host(const Tensor& device) {
  std::vector<float> out(static_cast<size_t>(device.numel()));
  EXPECT_TRUE(cuda::CopyToHost(out.data(), device.raw(), out.size() * sizeof(float)).ok());
  return out;
}

// A device array of T (any trivially copyable type), for the spans ops take.
template <class T>
class DeviceArray {
 public:
  explicit DeviceArray(const std::vector<T>& host) : size_(host.size()) {
    auto t = cuda::AllocateDevice(DType::kI32, {static_cast<int64_t>(Words())});
    EXPECT_TRUE(t.ok()) << t.status();
    storage_ = *std::move(t);
    EXPECT_TRUE(cuda::CopyToDevice(storage_.raw(), host.data(), host.size() * sizeof(T)).ok());
  }
  explicit DeviceArray(size_t n) : DeviceArray(std::vector<T>(n)) {}

  std::span<T> span() { return {static_cast<T*>(storage_.raw()), size_}; }
  std::span<const T> cspan() const { return {static_cast<const T*>(storage_.raw()), size_}; }
  T* data() { return static_cast<T*>(storage_.raw()); }
  std::vector<T> ToHost() const {
    std::vector<T> out(size_);
    EXPECT_TRUE(cuda::CopyToHost(out.data(), storage_.raw(), size_ * sizeof(T)).ok());
    return out;
  }

 private:
  size_t Words() const { return (size_ * sizeof(T) + 3) / 4 + 1; }
  size_t size_;
  Tensor storage_;
};

// ||got - want|| / ||want|| over all elements (NaN in got counts as infinite).
inline double RelativeError(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    if (std::isnan(got[i]) != std::isnan(want[i])) return INFINITY;
    if (std::isnan(got[i])) continue;
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

// The elements of a strided host view, row by row.
inline std::vector<float> Elements(ConstMatView v) {
  std::vector<float> out;
  out.reserve(static_cast<size_t>(v.rows * v.cols));
  for (int64_t r = 0; r < v.rows; ++r) out.insert(out.end(), v.row(r), v.row(r) + v.cols);
  return out;
}

// A float32 matrix in device memory with a host twin of the same layout
// (rows x stride, the view's columns starting at `offset`): tests fill the
// host twin, upload, run both op sets on their own copy, download, compare.
struct TwinMatrix {
  Tensor host;    // [rows, stride]
  Tensor device;  // same
  int64_t rows, cols, stride, offset;

  TwinMatrix(int64_t r, int64_t c, uint32_t seed, int64_t extra_cols = 0, int64_t off = 0,
             float scale = 1.0f)
      : rows(r), cols(c), stride(c + extra_cols), offset(off) {
    host = RandomTensor({rows, stride}, seed, scale);
    device = Dev(host);
  }
  MatView host_view() { return {host.f32() + offset, rows, cols, stride}; }
  MatView device_view() { return {device.f32() + offset, rows, cols, stride}; }
  void Upload() { EXPECT_TRUE(cuda::CopyToDevice(device.raw(), host.raw(), host.nbytes()).ok()); }
  // The view's elements as the device holds them.
  std::vector<float> DeviceElements() const {
    const std::vector<float> all = Host(device);
    return Elements({all.data() + offset, rows, cols, stride});
  }
  std::vector<float> HostElements() const {
    return Elements({host.f32() + offset, rows, cols, stride});
  }
};

// DeepSeek-style FP8 block quantization of a host float32 weight [rows,
// cols]: codes and scale_inv [ceil(rows/128), ceil(cols/128)], scale =
// amax / 448 per block. `dequantized` is what the CPU backend computes with
// (DequantizeFp8Blocks, as the runtime does at load).
struct Fp8Weight {
  std::vector<uint8_t> codes;
  std::vector<float> scale_inv;
  Tensor dequantized;  // host F32
  Tensor device;       // device F8E4M3 with scales

  explicit Fp8Weight(const Tensor& w) {
    const int64_t rows = w.dim(0), cols = w.dim(1), b = cuda::kFp8Block;
    const int64_t br = CeilDiv(rows, b), bc = CeilDiv(cols, b);
    codes.resize(static_cast<size_t>(rows * cols));
    scale_inv.resize(static_cast<size_t>(br * bc));
    for (int64_t i = 0; i < br; ++i) {
      for (int64_t j = 0; j < bc; ++j) {
        float amax = 0;
        for (int64_t r = i * b; r < std::min(rows, (i + 1) * b); ++r) {
          for (int64_t c = j * b; c < std::min(cols, (j + 1) * b); ++c) {
            amax = std::max(amax, std::fabs(w.f32()[r * cols + c]));
          }
        }
        const float s = amax > 0 ? amax / kFp8E4M3Max : 1.0f;
        scale_inv[static_cast<size_t>(i * bc + j)] = s;
        for (int64_t r = i * b; r < std::min(rows, (i + 1) * b); ++r) {
          for (int64_t c = j * b; c < std::min(cols, (j + 1) * b); ++c) {
            codes[static_cast<size_t>(r * cols + c)] = F32ToFp8E4M3(w.f32()[r * cols + c] / s);
          }
        }
      }
    }
    dequantized = Tensor::Empty(DType::kF32, {rows, cols});
    DequantizeFp8Blocks(codes.data(), rows, cols, scale_inv.data(), b, dequantized.f32());
    auto d = cuda::UploadFp8Weight(codes.data(), rows, cols, scale_inv.data());
    EXPECT_TRUE(d.ok()) << d.status();
    if (d.ok()) device = *std::move(d);
  }
};

// What the GPU's activation quantization does to x (quantize.h): per row and
// 128 channels, s = amax / 448 (1 for an all-zero block), x -> e4m3(x / s) * s.
inline std::vector<float> QuantDequantActivations(const std::vector<float>& x, int64_t rows,
                                                  int64_t cols) {
  std::vector<float> out(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c0 = 0; c0 < cols; c0 += 128) {
      const int64_t c1 = std::min(cols, c0 + 128);
      float amax = 0;
      for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(x[r * cols + c]));
      const float s = amax > 0 ? amax / kFp8E4M3Max : 1.0f;
      for (int64_t c = c0; c < c1; ++c) {
        out[r * cols + c] = Fp8E4M3ToF32(F32ToFp8E4M3(x[r * cols + c] / s)) * s;
      }
    }
  }
  return out;
}

// x rounded to bf16 and back (what the GPU feeds a bf16 product).
inline std::vector<float> RoundToBf16(std::vector<float> x) {
  for (float& v : x) v = Bf16ToF32(F32ToBf16(v));
  return x;
}

}  // namespace moeserve::testing

#endif  // MOESERVE_TESTS_KERNELS_CUDA_CUDA_TEST_UTIL_H_
