// GPU benchmarks of the CUDA op set at DeepSeek-V3 scale, against the
// device's limits (docs/gpu.md says how to run it and what to record):
//
//   (a) gemm    bf16 and FP8 (block-scaled) Linear TFLOP/s at DeepSeek-V3's
//               projection shapes, 64..4096 tokens, against the tensor-core
//               peak; "gemm" times the product alone, "linear" adds the
//               activation conversion (bf16 rounding or FP8 quantization).
//   (b) moe     one MoE layer's routed experts at full size (hidden 7168,
//               expert intermediate 2048, 256 experts, top-8) on one rank of
//               EP8 (32 local experts), 64..4096 tokens, against the HBM
//               bound (bytes of the experts touched / bandwidth) and the
//               FLOP bound.
//   (c) mla     MLA decode attention (absorbed form) at batch 64..256, 4k
//               context, against the bytes of the latent cache and the FLOPs.
//   (d) decode  the decode step of one EP8 rank of DeepSeek-V3 (61 layers)
//               from measured layer times, as tokens/s per GPU.
//
//   build-cuda/tools/bench/gpu_bench [--section=all|gemm|moe|mla|decode]
//                                    [--iters=20] [--quick] [--json=FILE]
//
// Without a GPU it says so and exits 0. Timing: CUDA events around each run,
// median of --iters runs after warm-up; weights rotate over enough copies to
// exceed the L2 cache where they would otherwise fit in it.
#include "tools/bench/gpu_bench.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_tensor.h"
#include "kernels/cuda/gemm.h"

namespace moeserve::bench {

DeviceLimits QueryLimits() {
  DeviceLimits l;
  int dev = 0;
  MOESERVE_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  MOESERVE_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  l.name = prop.name;
  l.sms = prop.multiProcessorCount;
  l.l2_bytes = static_cast<size_t>(prop.l2CacheSize);
  int clock_khz = 0, mem_khz = 0, bus_bits = 0;
  MOESERVE_CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, dev));
  MOESERVE_CUDA_CHECK(cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, dev));
  MOESERVE_CUDA_CHECK(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev));
  l.clock_ghz = clock_khz * 1e-6;
  l.hbm_gbps = 2.0 * mem_khz * 1e3 * bus_bits / 8 / 1e9;  // double data rate
  l.fp32_tflops = l.sms * 128 * 2 * l.clock_ghz * 1e-3;   // 128 FP32 lanes per SM
  const auto has = [&](const char* s) { return l.name.find(s) != std::string::npos; };
  if (has("H100") && (has("PCIe") || has("PCIE"))) {
    l.bf16_tflops = 756;
    l.fp8_tflops = 1513;
    l.datasheet = true;
  } else if (has("H100 NVL")) {
    l.bf16_tflops = 835;
    l.fp8_tflops = 1671;
    l.datasheet = true;
  } else if (has("H100") || has("H200") || has("H800") || has("H20")) {
    l.bf16_tflops = has("H20") && !has("H200") ? 148 : 989;  // H20 is a cut-down part
    l.fp8_tflops = 2 * l.bf16_tflops;
    l.datasheet = true;
  } else {  // Hopper tensor cores: 4096 dense bf16 FLOP per SM per clock
    l.bf16_tflops = l.sms * 4096 * l.clock_ghz * 1e-3;
    l.fp8_tflops = 2 * l.bf16_tflops;
  }
  return l;
}

void MeasureCeilings(cuda::CudaOps& ops, DeviceLimits& l) {
  // Copy: 2 GiB device to device, counting bytes read and written.
  const size_t bytes = size_t{2} << 30;
  void* a = nullptr;
  void* b = nullptr;
  MOESERVE_CUDA_CHECK(cudaMalloc(&a, bytes));
  MOESERVE_CUDA_CHECK(cudaMalloc(&b, bytes));
  MOESERVE_CUDA_CHECK(cudaMemset(a, 1, bytes));
  const double copy_ms = MedianMs(ops.stream(), 2, 10, [&] {
    MOESERVE_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, ops.stream()));
  });
  l.copy_gbps = 2.0 * bytes / (copy_ms * 1e-3) / 1e9;
  MOESERVE_CUDA_CHECK(cudaFree(a));
  MOESERVE_CUDA_CHECK(cudaFree(b));

  // bf16 product 8192^3 on random data, float32 out.
  const int64_t n = 8192;
  const Tensor w = RandomWeight(DType::kBF16, n, n, 1);
  const Tensor x = RandomWeight(DType::kBF16, n, n, 2);
  Tensor y = cuda::AllocateDevice(DType::kF32, {n, n}).value();
  auto gemm = cuda::GemmRunner::Create(ops.stream(), size_t{32} << 20).value();
  cuda::MatmulArgs args;
  args.trans_a = true;
  args.m = args.n = args.k = n;
  args.a = w.raw();
  args.a_type = args.b_type = CUDA_R_16BF;
  args.lda = args.ldb = args.ldd = n;
  args.b = x.raw();
  args.d = y.f32();
  const double ms = MedianMs(ops.stream(), 3, 10, [&] { gemm->Matmul(args, "ceiling"); });
  l.bf16_gemm_tflops = 2.0 * n * n * n / (ms * 1e-3) / 1e12;
}

void PrintLimits(const DeviceLimits& l) {
  std::printf("device: %s, %d SMs at %.2f GHz, L2 %.0f MiB\n", l.name.c_str(), l.sms, l.clock_ghz,
              l.l2_bytes / 1048576.0);
  std::printf(
      "peaks (%s): bf16 %.0f TFLOP/s, fp8 %.0f TFLOP/s dense; fp32 CUDA cores %.1f "
      "TFLOP/s; HBM %.0f GB/s\n",
      l.datasheet ? "datasheet" : "estimated from SMs x clock", l.bf16_tflops, l.fp8_tflops,
      l.fp32_tflops, l.hbm_gbps);
  std::printf(
      "measured ceilings: device copy %.0f GB/s (read + write), bf16 8192^3 product "
      "%.0f TFLOP/s (%.0f%% of peak)\n\n",
      l.copy_gbps, l.bf16_gemm_tflops, 100 * l.bf16_gemm_tflops / l.bf16_tflops);
}

double MedianMs(cudaStream_t stream, int warmup, int iters, const std::function<void()>& run) {
  for (int i = 0; i < warmup; ++i) run();
  cudaEvent_t start, stop;
  MOESERVE_CUDA_CHECK(cudaEventCreate(&start));
  MOESERVE_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> ms(static_cast<size_t>(std::max(iters, 1)));
  for (float& t : ms) {
    MOESERVE_CUDA_CHECK(cudaEventRecord(start, stream));
    run();
    MOESERVE_CUDA_CHECK(cudaEventRecord(stop, stream));
    MOESERVE_CUDA_CHECK(cudaEventSynchronize(stop));
    MOESERVE_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
  }
  MOESERVE_CUDA_CHECK(cudaEventDestroy(start));
  MOESERVE_CUDA_CHECK(cudaEventDestroy(stop));
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

Tensor RandomWeight(DType dtype, int64_t rows, int64_t cols, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  const auto n = static_cast<size_t>(rows * cols);
  if (dtype == DType::kF8E4M3) {
    std::vector<uint8_t> codes(n);
    for (size_t i = 0; i < n; i += 8) {
      uint64_t bits = rng();
      for (size_t j = i; j < std::min(n, i + 8); ++j, bits >>= 8) {
        const auto c = static_cast<uint8_t>(bits & 0xff);
        codes[j] = (c & 0x7f) == 0x7f ? static_cast<uint8_t>(c & 0xfe) : c;  // no NaN codes
      }
    }
    std::vector<float> scales(static_cast<size_t>(CeilDiv(rows, 128) * CeilDiv(cols, 128)),
                              scale / kFp8E4M3Max);
    return cuda::UploadFp8Weight(codes.data(), rows, cols, scales.data()).value();
  }
  std::uniform_real_distribution<float> dist(-scale, scale);
  Tensor t = cuda::AllocateDevice(dtype, {rows, cols}).value();
  if (dtype == DType::kBF16) {
    std::vector<uint16_t> bits(n);
    for (uint16_t& b : bits) b = F32ToBf16(dist(rng));
    MOESERVE_CUDA_CHECK(cudaMemcpy(t.raw(), bits.data(), n * 2, cudaMemcpyHostToDevice));
  } else {
    std::vector<float> v(n);
    for (float& f : v) f = dist(rng);
    MOESERVE_CUDA_CHECK(cudaMemcpy(t.raw(), v.data(), n * 4, cudaMemcpyHostToDevice));
  }
  return t;
}

Tensor RandomActivations(int64_t rows, int64_t cols, uint64_t seed, float scale) {
  return RandomWeight(DType::kF32, rows, cols, seed, scale);
}

Tensor DeviceInts(const std::vector<int32_t>& values) {
  Tensor t =
      cuda::AllocateDevice(DType::kI32, {static_cast<int64_t>(std::max<size_t>(values.size(), 1))})
          .value();
  MOESERVE_CUDA_CHECK(
      cudaMemcpy(t.raw(), values.data(), values.size() * 4, cudaMemcpyHostToDevice));
  return t;
}

std::vector<int32_t> UniformRouting(int64_t tokens, int64_t experts, int64_t top_k, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> all(static_cast<size_t>(experts)), ids;
  std::iota(all.begin(), all.end(), 0);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t j = 0; j < top_k; ++j) {  // partial Fisher-Yates: k distinct experts
      std::uniform_int_distribution<int64_t> pick(j, experts - 1);
      std::swap(all[static_cast<size_t>(j)], all[static_cast<size_t>(pick(rng))]);
      ids.push_back(all[static_cast<size_t>(j)]);
    }
  }
  return ids;
}

// (a) ------------------------------------------------------------------------

void BenchGemms(cuda::CudaOps& ops, const DeviceLimits& l, const Options& o) {
  struct Shape {
    const char* name;
    int64_t n, k;
  };
  using D = DeepSeekV3;
  const Shape shapes[] = {{"q_a_proj", D::kQLora, D::kHidden},
                          {"q_b_proj", D::kHeads * (D::kNope + D::kRope), D::kQLora},
                          {"kv_a_proj", D::kKvLora + D::kRope, D::kHidden},
                          {"o_proj", D::kHidden, D::kHeads * D::kVHead},
                          {"dense_gate_up", D::kDenseInter, D::kHidden},
                          {"dense_down", D::kHidden, D::kDenseInter},
                          {"expert_gate_up", D::kExpertInter, D::kHidden},
                          {"expert_down", D::kHidden, D::kExpertInter},
                          {"lm_head", D::kVocab, D::kHidden}};
  std::printf("(a) Linear y = x W^T at DeepSeek-V3 shapes (float32 x and y)\n");
  std::printf("%-15s %5s %6s %6s %5s | %9s %8s %6s | %9s %8s\n", "shape", "dtype", "N", "K", "M",
              "gemm ms", "TFLOP/s", "%peak", "linear ms", "TFLOP/s");
  auto gemm = cuda::GemmRunner::Create(ops.stream(), size_t{32} << 20).value();
  for (const Shape& s : shapes) {
    for (DType dtype : {DType::kBF16, DType::kF8E4M3}) {
      const size_t weight_bytes = static_cast<size_t>(s.n * s.k) * (dtype == DType::kBF16 ? 2 : 1);
      const int copies =
          static_cast<int>(std::clamp<size_t>(3 * l.l2_bytes / weight_bytes + 1, 1, 8));
      std::vector<Tensor> w;
      for (int c = 0; c < copies; ++c) w.push_back(RandomWeight(dtype, s.n, s.k, 10 + c));
      for (int64_t m : {int64_t{64}, int64_t{512}, int64_t{4096}}) {
        if (o.quick && m == 512) continue;
        const Tensor x = RandomActivations(m, s.k, 3);
        Tensor y = cuda::AllocateDevice(DType::kF32, {m, s.n}).value();
        int next = 0;
        const cuda::GemmInput in = gemm->Prepare(x.mat(), dtype);
        const double gemm_ms = MedianMs(ops.stream(), 3, o.iters, [&] {
          gemm->Multiply(in, w[static_cast<size_t>(next++ % copies)], y.mat());
        });
        const double linear_ms = MedianMs(ops.stream(), 3, o.iters, [&] {
          gemm->Linear(x.mat(), w[static_cast<size_t>(next++ % copies)], y.mat());
        });
        const double flops = 2.0 * m * s.n * s.k;
        const double peak = dtype == DType::kBF16 ? l.bf16_tflops : l.fp8_tflops;
        const double tflops = flops / (gemm_ms * 1e-3) / 1e12;
        const char* dt = dtype == DType::kBF16 ? "bf16" : "fp8";
        std::printf("%-15s %5s %6lld %6lld %5lld | %9.3f %8.1f %5.0f%% | %9.3f %8.1f\n", s.name, dt,
                    static_cast<long long>(s.n), static_cast<long long>(s.k),
                    static_cast<long long>(m), gemm_ms, tflops, 100 * tflops / peak, linear_ms,
                    flops / (linear_ms * 1e-3) / 1e12);
        if (o.json != nullptr) {
          std::fprintf(o.json,
                       "{\"section\":\"gemm\",\"shape\":\"%s\",\"dtype\":\"%s\",\"n\":%lld,"
                       "\"k\":%lld,\"m\":%lld,\"gemm_ms\":%.5f,\"linear_ms\":%.5f,"
                       "\"tflops\":%.2f,\"peak_tflops\":%.0f}\n",
                       s.name, dt, static_cast<long long>(s.n), static_cast<long long>(s.k),
                       static_cast<long long>(m), gemm_ms, linear_ms, tflops, peak);
        }
      }
    }
  }
  const auto& st = gemm->stats();
  std::printf("fp8 products: %lld block-scaled (weight as A), %lld block-scaled swapped\n\n",
              static_cast<long long>(st.fp8_direct), static_cast<long long>(st.fp8_swapped));
}

}  // namespace moeserve::bench

int main(int argc, char** argv) {
  using namespace moeserve::bench;
  Options o;
  std::string section = "all";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--section=", 0) == 0) {
      section = a.substr(10);
    } else if (a.rfind("--iters=", 0) == 0) {
      o.iters = std::max(1, std::atoi(a.c_str() + 8));
    } else if (a == "--quick") {
      o.quick = true;
      o.iters = std::min(o.iters, 5);
    } else if (a.rfind("--json=", 0) == 0) {
      o.json = std::fopen(a.c_str() + 7, "w");
    } else {
      std::fprintf(stderr,
                   "usage: gpu_bench [--section=all|gemm|moe|mla|decode] [--iters=N] "
                   "[--quick] [--json=FILE]\n");
      return 2;
    }
  }
  auto ops = moeserve::cuda::CudaOps::Create({});
  if (!ops.ok()) {
    std::printf("gpu_bench: %s; nothing measured.\n", std::string(ops.status().message()).c_str());
    return 0;
  }
  DeviceLimits limits = QueryLimits();
  MeasureCeilings(**ops, limits);
  PrintLimits(limits);
  const auto want = [&](const char* s) { return section == "all" || section == s; };
  if (want("gemm")) BenchGemms(**ops, limits, o);
  if (want("moe")) BenchMoeLayer(**ops, limits, o);
  if (want("mla")) BenchMlaDecode(**ops, limits, o);
  if (want("decode")) BenchDecodeProjection(**ops, limits, o);
  if (o.json != nullptr) std::fclose(o.json);
  return (*ops)->Synchronize().ok() ? 0 : 1;
}
