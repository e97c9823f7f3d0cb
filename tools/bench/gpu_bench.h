// Shared pieces of gpu_bench: the device's limits, event timing, random
// device weights and the report table. See gpu_bench.cc for what is measured.
#ifndef MOESERVE_TOOLS_BENCH_GPU_BENCH_H_
#define MOESERVE_TOOLS_BENCH_GPU_BENCH_H_

#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/tensor.h"

namespace moeserve::bench {

// The device and its limits: datasheet figures (by name, else estimated
// from multiprocessors x clock) and the two ceilings measured here.
struct DeviceLimits {
  std::string name;
  int sms = 0;
  double clock_ghz = 0;
  size_t l2_bytes = 0;
  bool datasheet = false;  // peaks below come from the datasheet
  double bf16_tflops = 0;  // dense tensor-core peak
  double fp8_tflops = 0;
  double fp32_tflops = 0;       // CUDA cores (FFMA), the peak of float32 kernels
  double hbm_gbps = 0;          // from memory clock x bus width
  double copy_gbps = 0;         // measured: device-to-device copy, read + write
  double bf16_gemm_tflops = 0;  // measured: 8192^3 bf16 product through cuBLASLt
};

DeviceLimits QueryLimits();
void MeasureCeilings(cuda::CudaOps& ops, DeviceLimits& limits);
void PrintLimits(const DeviceLimits& limits);

// Median time in ms of `run` (which queues work on `stream`), timed with
// events around each of `iters` runs after `warmup` runs.
double MedianMs(cudaStream_t stream, int warmup, int iters, const std::function<void()>& run);

// Device weights with random values: F32, BF16 or F8E4M3 (with block scales).
Tensor RandomWeight(DType dtype, int64_t rows, int64_t cols, uint64_t seed, float scale = 0.05f);
// Device float32 activations, uniform in [-scale, scale).
Tensor RandomActivations(int64_t rows, int64_t cols, uint64_t seed, float scale = 1.0f);
// Device int32 array.
Tensor DeviceInts(const std::vector<int32_t>& values);

// DeepSeek-V3's shapes.
struct DeepSeekV3 {
  static constexpr int64_t kHidden = 7168;
  static constexpr int64_t kExpertInter = 2048;
  static constexpr int64_t kDenseInter = 18432;
  static constexpr int64_t kExperts = 256;
  static constexpr int64_t kTopK = 8;
  static constexpr int64_t kGroups = 8;
  static constexpr int64_t kTopKGroups = 4;
  static constexpr int64_t kLocalExperts = 32;  // one rank of EP8
  static constexpr int64_t kLayers = 61;
  static constexpr int64_t kDenseLayers = 3;
  static constexpr int64_t kHeads = 128;
  static constexpr int64_t kQLora = 1536;
  static constexpr int64_t kKvLora = 512;
  static constexpr int64_t kNope = 128;
  static constexpr int64_t kRope = 64;
  static constexpr int64_t kVHead = 128;
  static constexpr int64_t kVocab = 129280;
};

// Token ids of `tokens` tokens' top-k experts: k distinct experts of
// `experts`, uniformly (a balanced router), reproducible from `seed`.
std::vector<int32_t> UniformRouting(int64_t tokens, int64_t experts, int64_t top_k, uint64_t seed);

// Sections (gpu_bench_layers.cc).
struct Options {
  int iters = 20;
  bool quick = false;
  FILE* json = nullptr;  // one JSON object per measurement, when set
};
void BenchGemms(cuda::CudaOps& ops, const DeviceLimits& limits, const Options& options);
void BenchMoeLayer(cuda::CudaOps& ops, const DeviceLimits& limits, const Options& options);
void BenchMlaDecode(cuda::CudaOps& ops, const DeviceLimits& limits, const Options& options);
void BenchDecodeProjection(cuda::CudaOps& ops, const DeviceLimits& limits, const Options& options);

}  // namespace moeserve::bench

#endif  // MOESERVE_TOOLS_BENCH_GPU_BENCH_H_
