// CPU engine throughput: prefill and decode tokens/s of Model::Forward for
// the tiny models and a "small" DeepSeek-V3-architecture model (hidden 1024,
// 64 routed experts, top-6), with the share of time spent in GEMM-bound ops.
//
//   build/tools/bench/engine_bench [--quick]
//
// Prints one table row per (model, phase). Figures depend on the machine and
// on OpenBLAS's thread count (OPENBLAS_NUM_THREADS).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/kv_cache/paged_kv_cache.h"
#include "runtime/model/model.h"
#include "tools/bench/profiling_ops.h"
#include "tools/tiny_model/tiny_model.h"

namespace moeserve {
namespace {

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
};

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
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
  return f;
}

int Main(bool quick) {
  const std::string root = (std::filesystem::temp_directory_path() / "moeserve_bench").string();
  struct ModelSpec {
    const char* label;
    TinyArch arch;
    TinySize size;
  };
  std::vector<ModelSpec> models = {{"tiny deepseek_v3 fp8", TinyArch::kDeepseekV3, TinySize::kTiny},
                                   {"tiny qwen3_moe bf16", TinyArch::kQwen3Moe, TinySize::kTiny},
                                   {"small deepseek_v3 fp8", TinyArch::kDeepseekV3, TinySize::kSmall}};
  const std::vector<Phase> phases = {
      {"prefill 1x512", 1, quick ? 128 : 512, 0},
      {"prefill 8x128", 8, 128, 0},
      {"decode batch 1", 1, 128, quick ? 4 : 32},
      {"decode batch 32", 32, 128, quick ? 4 : 16},
  };
  std::printf("%-24s %-16s %12s %10s %8s %8s\n", "model", "phase", "tokens/s", "ms/step",
              "GEMM %", "attn %");
  auto ops = CreateCpuOps();
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
    ProfilingOps prof(*ops);
    auto model = LoadModel(**checkpoint, WeightSelection{}, prof);
    if (!model.ok()) {
      std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
      return 1;
    }
    for (const Phase& phase : phases) {
      const Figures f = RunPhase(**model, prof, phase);
      std::printf("%-24s %-16s %12.0f %10.2f %7.1f%% %7.1f%%\n", spec.label, phase.name,
                  f.tokens_per_s, f.ms_per_step, 100 * f.gemm_share, 100 * f.attention_share);
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
