// Expert-parallel step time with the two-micro-batch overlap off and on.
//
//   build/tools/bench/ep_bench [--quick] [--ranks 2,4] [--ratios 0.5,1,1.5] [--layers 8]
//
// Ranks are threads of this process, each with its own copy of the "small"
// DeepSeek-V3-architecture model (hidden 1024, 64 routed experts, top-6; its
// slice of the experts; 8 layers, the first dense, unless --layers says
// otherwise), KV cache and sequences, joined by a real Gloo group
// over loopback TCP. OpenBLAS runs single-threaded per rank.
//
// A CPU box has no NVLink or InfiniBand to measure, so the communicator runs
// behind an emulated link (runtime/parallel/communicator.h) whose per-
// collective latency is set so that the step's all-to-all time is `ratio`
// times its compute time: the comm:compute ratio of the interconnect being
// modelled (see docs/performance.md). For each group size and ratio it
// prints the decode step time with overlap off and on, the all-to-all time
// per step, the part of it compute waited for, and the share hidden behind
// compute (the goal: >= 80% when communication takes no longer than compute).
#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "gloo/rendezvous/hash_store.h"
#include "kernels/cpu/cpu_backend.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/kv_cache/paged_kv_cache.h"
#include "runtime/model/model.h"
#include "runtime/parallel/gloo_communicator.h"
#include "tools/tiny_model/tiny_model.h"

namespace moeserve {
namespace {

using Clock = std::chrono::steady_clock;

struct Config {
  int ranks = 2;
  bool overlap = false;
  double link_latency_us = 0;  // per collective
  int seqs_per_rank = 32;
  int prompt_tokens = 32;
  int decode_steps = 12;
};

struct Result {
  double step_ms = 0;        // a decode step, slowest rank
  double all_to_all_ms = 0;  // in that step, mean over ranks
  double exposed_ms = 0;     // in that step, mean over ranks
  double compute_ms = 0;     // per step in the layers' compute stages, mean over ranks
};

// One rank: loads the model with its experts, prefills its sequences, then
// times decode steps in lockstep with the others.
void RunRank(const std::string& dir, const Config& c, int rank,
             std::shared_ptr<gloo::rendezvous::Store> store, std::barrier<>& sync,
             std::vector<double>& step_seconds, std::vector<double>& a2a,
             std::vector<double>& exposed, std::vector<double>& compute,
             std::atomic<bool>& failed) {
  GlooOptions go;
  go.rank = rank;
  go.size = c.ranks;
  auto gloo = GlooCommunicator::Create(go, store);
  if (!gloo.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", rank, std::string(gloo.status().message()).c_str());
    failed = true;
    return;
  }
  EmulatedLink link;
  link.latency_us = c.link_latency_us;
  std::unique_ptr<Communicator> comm = WithEmulatedLink(*std::move(gloo), link);
  auto backend = CreateCpuBackend();
  auto checkpoint = Checkpoint::Open(dir);
  ModelOptions mo;
  mo.parallel.comm = comm.get();
  mo.parallel.micro_batches = 2;
  mo.parallel.overlap = c.overlap;
  // The largest step is the prefill of every sequence of the rank at once.
  mo.max_batch_tokens = c.seqs_per_rank * c.prompt_tokens;
  auto model = LoadModel(**checkpoint, WeightSelection{}, *backend, mo);
  if (!model.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", rank, std::string(model.status().message()).c_str());
    failed = true;
    return;
  }
  const ModelConfig& mc = (*model)->config();
  const int64_t block = 64;
  const int64_t per_seq_blocks = (c.prompt_tokens + c.decode_steps + block - 1) / block;
  PagedKvCache::Options co;
  co.num_layers = mc.num_hidden_layers;
  co.num_blocks = per_seq_blocks * c.seqs_per_rank;
  co.block_size = block;
  co.width = mc.kv_cache_width();
  auto cache = PagedKvCache::Create(co);
  std::mt19937 rng(static_cast<uint32_t>(rank + 1));
  std::vector<std::vector<int32_t>> tables(static_cast<size_t>(c.seqs_per_rank));
  int32_t next_block = 0;
  for (auto& t : tables) {
    for (int64_t b = 0; b < per_seq_blocks; ++b) t.push_back(next_block++);
  }
  auto run = [&](int64_t fed, int64_t context) -> absl::Status {
    ForwardBatch batch;
    for (int s = 0; s < c.seqs_per_rank; ++s) {
      SeqSlice slice;
      slice.token_begin = static_cast<int64_t>(batch.tokens.size());
      slice.num_tokens = fed;
      slice.context_len = context;
      slice.block_table = tables[static_cast<size_t>(s)];
      for (int64_t j = 0; j < fed; ++j) {
        batch.tokens.push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(mc.vocab_size)));
      }
      batch.logit_rows.push_back(slice.token_begin + fed - 1);
      batch.seqs.push_back(slice);
    }
    return (*model)->Forward(batch, **cache).status();
  };
  if (!run(c.prompt_tokens, c.prompt_tokens).ok()) failed = true;
  for (int step = 0; step < c.decode_steps; ++step) {
    sync.arrive_and_wait();  // all ranks start the step together
    const auto start = Clock::now();
    if (absl::Status s = run(1, c.prompt_tokens + step + 1); !s.ok()) {
      std::fprintf(stderr, "rank %d: %s\n", rank, std::string(s.message()).c_str());
      failed = true;
    }
    step_seconds[static_cast<size_t>(step * c.ranks + rank)] =
        std::chrono::duration<double>(Clock::now() - start).count();
    const CommunicationTiming& t = (*model)->last_forward_stats().communication;
    a2a[static_cast<size_t>(step * c.ranks + rank)] = t.all_to_all_seconds;
    exposed[static_cast<size_t>(step * c.ranks + rank)] = t.exposed_seconds;
    compute[static_cast<size_t>(step * c.ranks + rank)] = t.compute_seconds;
  }
}

Result Run(const std::string& dir, const Config& c) {
  auto store = std::make_shared<gloo::rendezvous::HashStore>();
  std::barrier<> sync(c.ranks);
  const auto n = static_cast<size_t>(c.ranks * c.decode_steps);
  std::vector<double> steps(n), a2a(n), exposed(n), compute(n);
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  for (int r = 0; r < c.ranks; ++r) {
    threads.emplace_back(RunRank, dir, c, r, store, std::ref(sync), std::ref(steps), std::ref(a2a),
                         std::ref(exposed), std::ref(compute), std::ref(failed));
  }
  for (auto& t : threads) t.join();
  if (failed) {
    std::fprintf(stderr, "ep_bench: a rank failed\n");
    std::exit(1);
  }
  // The first decode step warms caches; of the rest, the median step (by the
  // slowest rank's time) is reported, so that one step disturbed by another
  // process on a shared machine does not move the figures.
  std::vector<Result> per_step;
  for (int step = 1; step < c.decode_steps; ++step) {
    Result s;
    for (int rank = 0; rank < c.ranks; ++rank) {
      const size_t i = static_cast<size_t>(step * c.ranks + rank);
      s.step_ms = std::max(s.step_ms, steps[i] * 1e3);
      s.all_to_all_ms += a2a[i] * 1e3 / c.ranks;
      s.exposed_ms += exposed[i] * 1e3 / c.ranks;
      s.compute_ms += compute[i] * 1e3 / c.ranks;
    }
    per_step.push_back(s);
  }
  std::sort(per_step.begin(), per_step.end(),
            [](const Result& a, const Result& b) { return a.step_ms < b.step_ms; });
  Result r = per_step[per_step.size() / 2];
  return r;
}

std::vector<double> ParseList(const char* text) {
  std::vector<double> out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    double v = 0;
    if (!absl::SimpleAtod(part, &v)) {
      std::fprintf(stderr, "ep_bench: \"%s\" is not a number\n", std::string(part).c_str());
      std::exit(2);
    }
    out.push_back(v);
  }
  return out;
}

int Main(int argc, char** argv) {
  bool quick = false;
  std::vector<double> ranks_list = {2, 4};
  std::vector<double> ratios = {0.5, 1.0, 1.5};
  int layers = 8;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      quick = true;
    } else if (a == "--ranks" && i + 1 < argc) {
      ranks_list = ParseList(argv[++i]);
    } else if (a == "--ratios" && i + 1 < argc) {
      ratios = ParseList(argv[++i]);
    } else if (a == "--layers" && i + 1 < argc) {
      layers = static_cast<int>(ParseList(argv[++i]).at(0));
    } else {
      std::fprintf(stderr,
                   "usage: ep_bench [--quick] [--ranks 2,4] [--ratios 0.5,1,1.5] [--layers 8]\n");
      return 2;
    }
  }
  setenv("OPENBLAS_NUM_THREADS", "1", 0);
  const std::string dir =
      (std::filesystem::temp_directory_path() / "moeserve_ep_bench_model").string();
  TinyModelOptions to;
  to.arch = TinyArch::kDeepseekV3;
  to.size = quick ? TinySize::kTiny : TinySize::kSmall;
  to.out_dir = dir;
  to.seed = 5;
  to.num_layers = quick ? 0 : layers;
  if (absl::Status s = MakeTinyModel(to); !s.ok()) {
    std::fprintf(stderr, "ep_bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::printf(
      "model: %s DeepSeek-V3 architecture, %d layers (the first dense); decode steps of %d "
      "sequences per rank, context %d\n",
      quick ? "tiny" : "small (hidden 1024, 64 experts, top-6)", quick ? 3 : layers, quick ? 8 : 32,
      32);
  std::printf("%5s %6s %11s %10s %10s %10s %12s %11s %8s %8s\n", "ranks", "ratio", "compute_ms",
              "latency_us", "off_ms", "on_ms", "a2a_ms/step", "exposed_ms", "hidden", "speedup");
  for (double rd : ranks_list) {
    Config c;
    c.ranks = static_cast<int>(rd);
    if (quick) {
      c.seqs_per_rank = 8;
      c.decode_steps = 4;
    }
    // The layers' compute per step, overlap off over the plain loopback
    // group: what the all-to-all can hide behind.
    const Result base = Run(dir, c);
    const double compute_ms = base.compute_ms;
    // Collectives per step and rank: per MoE layer and micro-batch, the
    // count exchange and the rows for dispatch, the rows for combine.
    auto checkpoint = Checkpoint::Open(dir);
    auto cfg = ParseModelConfig((*checkpoint)->config_json());
    int64_t moe_layers = 0;
    for (int64_t l = 0; l < cfg->num_hidden_layers; ++l) moe_layers += cfg->IsMoeLayer(l) ? 1 : 0;
    const int64_t collectives = moe_layers * 2 * 3;
    for (double ratio : ratios) {
      c.link_latency_us = ratio * compute_ms * 1e3 / static_cast<double>(collectives);
      c.overlap = false;
      const Result off = Run(dir, c);
      c.overlap = true;
      const Result on = Run(dir, c);
      const double hidden = on.all_to_all_ms > 0 ? 1.0 - on.exposed_ms / on.all_to_all_ms : 0.0;
      std::printf("%5d %6.2f %11.2f %10.0f %10.2f %10.2f %12.2f %11.2f %7.1f%% %7.2fx\n", c.ranks,
                  ratio, compute_ms, c.link_latency_us, off.step_ms, on.step_ms, on.all_to_all_ms,
                  on.exposed_ms, hidden * 100.0, off.step_ms / on.step_ms);
      std::fflush(stdout);
    }
  }
  std::printf(
      "ratio: all-to-all time / the layers' compute time per step (compute_ms, overlap off),\n"
      "set through the emulated link's per-collective latency;\n"
      "hidden: share of all-to-all time compute did not wait for (overlap on).\n");
  return 0;
}

}  // namespace
}  // namespace moeserve

int main(int argc, char** argv) { return moeserve::Main(argc, argv); }
