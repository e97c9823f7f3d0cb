// CPU engine throughput: prefill and decode tokens/s of Model::Forward for
// the tiny models and a "small" DeepSeek-V3-architecture model (hidden 1024,
// 64 routed experts, top-6), with the share of time spent in GEMM-bound ops.
//
//   build/tools/bench/engine_bench [--quick]
//
// Prints the machine's limits (OpenBLAS sgemm GFLOP/s on a 1024^3 product,
// memcpy GB/s), then one row per (model, phase): tokens/s, ms per forward
// pass, the shares of time in GEMM-bound ops and in attention, and the GEMM
// rate and weight-read bandwidth inside those ops with their ratio to the
// limits (prefill is compute-bound, decode at small batch memory-bound).
// Figures depend on the machine and on OPENBLAS_NUM_THREADS.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_ops.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/kv_cache/paged_kv_cache.h"
#include "runtime/model/model.h"
#include "tools/bench/profiling_ops.h"
#include "tools/tiny_model/tiny_model.h"

namespace moeserve {
namespace {

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct Phase {
  const char* name;
  int64_t seqs;
  int64_t prompt_tokens;  // per sequence
  int64_t decode_steps;   // 0: time the prefill itself
};

struct Figures {
  double tokens_per_s = 0;
  double gemm_share = 0;
  double attention_share = 0;
  double ms_per_step = 0;
  double gemm_gflops = 0;  // achieved inside Linear/GatedFfn
  double weight_gbps = 0;  // weight bytes read by Linear/GatedFfn per second of them
};

// The machine's limits, measured here so the figures carry their ratio:
// float32 GEMM throughput of OpenBLAS on a large square product, and memory
// bandwidth as memcpy of a buffer far larger than the caches (read + write).
struct Limits {
  double sgemm_gflops = 0;
  double memcpy_gbps = 0;
};

Limits MeasureLimits(Ops& ops) {
  Limits l;
  const int64_t n = 1024;
  Tensor a = Tensor::Zeros(DType::kF32, {n, n});
  Tensor b = Tensor::Zeros(DType::kF32, {n, n});
  Tensor c = Tensor::Empty(DType::kF32, {n, n});
  ops.Linear(a.mat(), b, c.mat());  // warm-up
  auto start = std::chrono::steady_clock::now();
  const int reps = 5;
  for (int i = 0; i < reps; ++i) ops.Linear(a.mat(), b, c.mat());
  l.sgemm_gflops = reps * 2.0 * n * n * n / Seconds(start) / 1e9;
  const size_t bytes = size_t{512} << 20;
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  std::memcpy(dst.data(), src.data(), bytes);
  start = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) std::memcpy(dst.data(), src.data(), bytes);
  l.memcpy_gbps = 3.0 * 2.0 * static_cast<double>(bytes) / Seconds(start) / 1e9;
  return l;
}

// Runs one phase and returns its figures. Prefill phases time the prompts'
// forward pass; decode phases prefill untimed, then time decode_steps steps of
// one token per sequence.
Figures RunPhase(Model& model, ProfilingOps& prof, const Phase& phase) {
  const ModelConfig& c = model.config();
  const int64_t total = phase.prompt_tokens + phase.decode_steps + 1;
  const int64_t blocks_per_seq = CeilDiv(total, kDefaultKvBlockTokens);
  PagedKvCache::Options co{c.num_hidden_layers, phase.seqs * blocks_per_seq, kDefaultKvBlockTokens,
                           c.kv_cache_width()};
  auto cache = PagedKvCache::Create(co);
  if (!cache.ok()) {
    std::fprintf(stderr, "%s\n", std::string(cache.status().message()).c_str());
    std::exit(1);
  }
  std::vector<std::vector<int32_t>> tables(static_cast<size_t>(phase.seqs));
  for (int64_t s = 0; s < phase.seqs; ++s) {
    for (int64_t b = 0; b < blocks_per_seq; ++b) {
      tables[static_cast<size_t>(s)].push_back(static_cast<int32_t>(s * blocks_per_seq + b));
    }
  }
  std::mt19937 rng(42);
  auto batch_of = [&](int64_t new_tokens, int64_t context) {
    ForwardBatch batch;
    for (int64_t s = 0; s < phase.seqs; ++s) {
      SeqSlice slice{static_cast<int64_t>(batch.tokens.size()), new_tokens, context,
                     tables[static_cast<size_t>(s)]};
      batch.seqs.push_back(slice);
      for (int64_t t = 0; t < new_tokens; ++t) {
        batch.tokens.push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(c.vocab_size)));
      }
      batch.logit_rows.push_back(slice.token_begin + new_tokens - 1);
    }
    return batch;
  };
  auto forward = [&](const ForwardBatch& b) {
    auto logits = model.Forward(b, **cache);
    if (!logits.ok()) {
      std::fprintf(stderr, "forward failed: %s\n", std::string(logits.status().message()).c_str());
      std::exit(1);
    }
  };

  Figures f;
  double elapsed = 0;
  int64_t tokens = 0;
  int64_t steps = 0;
  if (phase.decode_steps == 0) {
    forward(batch_of(phase.prompt_tokens, phase.prompt_tokens));  // warm-up, same cache rows
    prof.Reset();
    const auto start = std::chrono::steady_clock::now();
    forward(batch_of(phase.prompt_tokens, phase.prompt_tokens));
    elapsed = Seconds(start);
    tokens = phase.seqs * phase.prompt_tokens;
    steps = 1;
  } else {
    forward(batch_of(phase.prompt_tokens, phase.prompt_tokens));
    prof.Reset();
    const auto start = std::chrono::steady_clock::now();
    for (int64_t step = 0; step < phase.decode_steps; ++step) {
      forward(batch_of(1, phase.prompt_tokens + step + 1));
    }
    elapsed = Seconds(start);
    tokens = phase.seqs * phase.decode_steps;
    steps = phase.decode_steps;
  }
  const auto& t = prof.seconds();
  auto get = [&](const char* k) { return t.count(k) ? t.at(k) : 0.0; };
  f.tokens_per_s = static_cast<double>(tokens) / elapsed;
  f.gemm_share = (get("Linear") + get("GatedFfn")) / elapsed;
  f.attention_share =
      (get("MlaAttentionPrefill") + get("MlaAttentionAbsorbed") + get("GqaAttention")) / elapsed;
  f.ms_per_step = 1e3 * elapsed / static_cast<double>(steps);
  const double gemm_seconds = get("Linear") + get("GatedFfn");
  f.gemm_gflops = prof.gemm_flops() / gemm_seconds / 1e9;
  f.weight_gbps = prof.weight_bytes() / gemm_seconds / 1e9;
  return f;
}

int Main(bool quick) {
  const std::string root = (std::filesystem::temp_directory_path() / "moeserve_bench").string();
  struct ModelSpec {
    const char* label;
    TinyArch arch;
    TinySize size;
  };
  std::vector<ModelSpec> models = {
      {"tiny deepseek_v3 fp8", TinyArch::kDeepseekV3, TinySize::kTiny},
      {"tiny qwen3_moe bf16", TinyArch::kQwen3Moe, TinySize::kTiny},
      {"small deepseek_v3 fp8", TinyArch::kDeepseekV3, TinySize::kSmall}};
  const std::vector<Phase> phases = {
      {"prefill 1x512", 1, quick ? 128 : 512, 0},
      {"prefill 8x128", 8, 128, 0},
      {"decode batch 1", 1, 128, quick ? 4 : 32},
      {"decode batch 32", 32, 128, quick ? 4 : 16},
  };
  auto ops = CreateCpuOps();
  const Limits limits = MeasureLimits(*ops);
  std::printf("limits: OpenBLAS sgemm 1024^3 %.1f GFLOP/s, memcpy %.1f GB/s\n\n",
              limits.sgemm_gflops, limits.memcpy_gbps);
  std::printf("%-22s %-15s %9s %9s %7s %7s %17s %17s\n", "model", "phase", "tokens/s", "ms/step",
              "GEMM%", "attn%", "GEMM GFLOP/s (%)", "weights GB/s (%)");
  for (const ModelSpec& spec : models) {
    TinyModelOptions o;
    o.arch = spec.arch;
    o.size = spec.size;
    o.dtype = spec.arch == TinyArch::kQwen3Moe ? TinyDtype::kBf16 : TinyDtype::kFp8;
    o.out_dir = root + "/" + std::string(spec.label);
    if (absl::Status s = MakeTinyModel(o); !s.ok()) {
      std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
      return 1;
    }
    auto checkpoint = Checkpoint::Open(o.out_dir);
    if (!checkpoint.ok()) return 1;
    // The model's ops run on its compute stream's thread, each timed there.
    auto prof = std::make_shared<ProfilingOps>(*ops);
    CpuBackendOptions backend_options;
    backend_options.ops = prof;
    auto backend = CreateCpuBackend(backend_options);
    // The step workspace is planned for the largest forward pass: a phase's
    // whole prefill in one step.
    ModelOptions model_options;
    for (const Phase& phase : phases) {
      model_options.max_batch_tokens =
          std::max(model_options.max_batch_tokens, phase.seqs * phase.prompt_tokens);
    }
    auto model = LoadModel(**checkpoint, WeightSelection{}, *backend, model_options);
    if (!model.ok()) {
      std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
      return 1;
    }
    for (const Phase& phase : phases) {
      const Figures f = RunPhase(**model, *prof, phase);
      std::printf("%-22s %-15s %9.0f %9.2f %6.1f%% %6.1f%% %9.1f (%4.0f%%) %9.1f (%4.0f%%)\n",
                  spec.label, phase.name, f.tokens_per_s, f.ms_per_step, 100 * f.gemm_share,
                  100 * f.attention_share, f.gemm_gflops, 100 * f.gemm_gflops / limits.sgemm_gflops,
                  f.weight_gbps, 100 * f.weight_gbps / limits.memcpy_gbps);
    }
  }
  std::filesystem::remove_all(root);
  return 0;
}

}  // namespace
}  // namespace moeserve

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  return moeserve::Main(quick);
}
