// gpu_bench sections (b) to (d): one MoE layer's routed experts, MLA decode
// attention, and the projected decode step of one EP8 rank of DeepSeek-V3.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_tensor.h"
#include "tools/bench/gpu_bench.h"

namespace moeserve::bench {
namespace {

using D = DeepSeekV3;
using cuda::CudaOps;

const char* DtypeName(DType d) { return d == DType::kBF16 ? "bf16" : "fp8"; }

// The local experts of one rank, and views of them for GroupedGatedFfn.
struct Experts {
  std::vector<Tensor> gate, up, down;
  std::vector<CudaOps::ExpertWeights> views;

  Experts(DType dtype, int64_t count, int64_t hidden, int64_t inter) {
    for (int64_t e = 0; e < count; ++e) {
      const uint64_t seed = 1000 + 3 * static_cast<uint64_t>(e);
      gate.push_back(RandomWeight(dtype, inter, hidden, seed));
      up.push_back(RandomWeight(dtype, inter, hidden, seed + 1));
      down.push_back(RandomWeight(dtype, hidden, inter, seed + 2));
    }
    for (int64_t e = 0; e < count; ++e) {
      const auto i = static_cast<size_t>(e);
      views.push_back({&gate[i], &up[i], &down[i]});
    }
  }
};

// The routed part of a MoE layer over `tokens` tokens whose top-k expert ids
// (device) are given: permute, grouped FFN, combine into `out`.
struct RoutedLayer {
  int64_t tokens;
  Tensor x, out, x_perm, y_perm;

  explicit RoutedLayer(int64_t t) : tokens(t) {
    x = RandomActivations(t, D::kHidden, 7);
    out = RandomActivations(t, D::kHidden, 8);
    const int64_t max_rows = t * D::kTopK + 3 * D::kLocalExperts;
    x_perm = cuda::AllocateDevice(DType::kF32, {max_rows, D::kHidden}).value();
    y_perm = cuda::AllocateDevice(DType::kF32, {max_rows, D::kHidden}).value();
  }
  CudaOps::ExpertPermutation Run(CudaOps& ops, const Experts& experts, std::span<const int32_t> ids,
                                 std::span<const float> gains, ConstMatView input, MatView output) {
    const auto perm = ops.PermuteByExpert(ids, D::kTopK, 0, D::kLocalExperts);
    const MatView xp = x_perm.mat().Rows(0, perm.padded_rows());
    const MatView yp = y_perm.mat().Rows(0, perm.padded_rows());
    ops.GatherPermuted(input, perm, xp);
    ops.GroupedGatedFfn(xp, perm, experts.views, yp);
    ops.CombineExperts(yp, perm, ids, gains, output);
    return perm;
  }
};

std::span<const int32_t> IntSpan(const Tensor& t, size_t n) {
  return {static_cast<const int32_t*>(t.raw()), n};
}
std::span<const float> FloatSpan(const Tensor& t, size_t n) {
  return {static_cast<const float*>(t.raw()), n};
}

}  // namespace

// (b) ------------------------------------------------------------------------

void BenchMoeLayer(CudaOps& ops, const DeviceLimits& l, const Options& o) {
  std::printf(
      "(b) MoE layer, routed experts of one EP8 rank: hidden %lld, expert inter %lld, "
      "%lld local of %lld experts, top-%lld (uniform routing)\n",
      static_cast<long long>(D::kHidden), static_cast<long long>(D::kExpertInter),
      static_cast<long long>(D::kLocalExperts), static_cast<long long>(D::kExperts),
      static_cast<long long>(D::kTopK));
  std::printf("%5s %6s %6s %7s | %9s | %9s %9s | %6s %8s\n", "dtype", "tokens", "pairs", "experts",
              "ms", "HBM ms", "FLOP ms", "bound%", "TFLOP/s");
  for (DType dtype : {DType::kF8E4M3, DType::kBF16}) {
    if (o.quick && dtype == DType::kBF16) continue;
    const Experts experts(dtype, D::kLocalExperts, D::kHidden, D::kExpertInter);
    for (int64_t t : {64, 128, 256, 512, 1024, 2048, 4096}) {
      if (o.quick && t != 64 && t != 512 && t != 4096) continue;
      RoutedLayer layer(t);
      const std::vector<int32_t> ids = UniformRouting(t, D::kExperts, D::kTopK, 11 + t);
      const Tensor dev_ids = DeviceInts(ids);
      const Tensor gains = RandomActivations(t, D::kTopK, 12, 0.3f);
      const auto id_span = IntSpan(dev_ids, ids.size());
      const auto gain_span = FloatSpan(gains, ids.size());
      const auto perm = layer.Run(ops, experts, id_span, gain_span, layer.x.mat(), layer.out.mat());
      const int64_t pairs = std::accumulate(perm.counts.begin(), perm.counts.end(), int64_t{0});
      const auto touched =
          std::count_if(perm.counts.begin(), perm.counts.end(), [](int64_t c) { return c > 0; });
      const double ms = MedianMs(ops.stream(), 2, o.iters, [&] {
        layer.Run(ops, experts, id_span, gain_span, layer.x.mat(), layer.out.mat());
      });
      const double expert_bytes =
          3.0 * D::kHidden * D::kExpertInter * (dtype == DType::kBF16 ? 2 : 1);
      // Weights of the touched experts once, tokens in and out (float32).
      const double bytes = touched * expert_bytes + 3.0 * t * D::kHidden * 4;
      const double flops = 2.0 * pairs * 3 * D::kHidden * D::kExpertInter;
      const double hbm_ms = bytes / (l.copy_gbps * 1e9) * 1e3;
      const double flop_ms =
          flops / ((dtype == DType::kBF16 ? l.bf16_tflops : l.fp8_tflops) * 1e12) * 1e3;
      std::printf("%5s %6lld %6lld %7lld | %9.3f | %9.3f %9.3f | %5.0f%% %8.1f\n", DtypeName(dtype),
                  static_cast<long long>(t), static_cast<long long>(pairs),
                  static_cast<long long>(touched), ms, hbm_ms, flop_ms,
                  100 * std::max(hbm_ms, flop_ms) / ms, flops / (ms * 1e-3) / 1e12);
      if (o.json != nullptr) {
        std::fprintf(o.json,
                     "{\"section\":\"moe\",\"dtype\":\"%s\",\"tokens\":%lld,\"pairs\":%lld,"
                     "\"experts\":%lld,\"ms\":%.5f,\"hbm_ms\":%.5f,\"flop_ms\":%.5f}\n",
                     DtypeName(dtype), static_cast<long long>(t), static_cast<long long>(pairs),
                     static_cast<long long>(touched), ms, hbm_ms, flop_ms);
      }
    }
  }
  std::printf(
      "HBM ms: bytes of the experts touched + tokens in/out at the measured copy "
      "bandwidth; FLOP ms: at the dtype's tensor-core peak; bound%% = max / measured\n\n");
}

// (c) ------------------------------------------------------------------------

namespace {

// A decode batch over a 4k-token latent cache (float32, 576 per token), its
// block tables scattered over the cache.
struct MlaBatch {
  int64_t batch, context;
  static constexpr int64_t kBlock = 64;
  Tensor cache;
  PagedCacheView view;
  std::vector<std::vector<int32_t>> tables;
  std::vector<SeqSlice> seqs;
  HostSeqTable host_table;
  std::vector<Tensor> device_arrays;  // the table's arrays on the device
  SeqTable table;

  static Tensor DeviceInts(const std::vector<int32_t>& host) {
    Tensor t = cuda::AllocateDevice(DType::kI32, {std::max<int64_t>(1, static_cast<int64_t>(host.size()))}).value();
    if (!host.empty()) {
      MOESERVE_CUDA_CHECK(cudaMemcpy(t.raw(), host.data(), host.size() * sizeof(int32_t),
                                     cudaMemcpyHostToDevice));
    }
    return t;
  }

  MlaBatch(int64_t b, int64_t ctx) : batch(b), context(ctx) {
    const int64_t width = D::kKvLora + D::kRope;
    const int64_t per_seq = CeilDiv(ctx, kBlock), blocks = b * per_seq;
    cache = cuda::AllocateDevice(DType::kF32, {blocks * kBlock, width}).value();
    // Random values, not zeros: one 64 MiB random piece repeated.
    const Tensor piece = RandomActivations(int64_t{1} << 14, 1024, 21);
    const size_t total = cache.nbytes(), chunk = piece.nbytes();
    for (size_t off = 0; off < total; off += chunk) {
      MOESERVE_CUDA_CHECK(cudaMemcpy(static_cast<char*>(cache.raw()) + off, piece.raw(),
                                     std::min(chunk, total - off), cudaMemcpyDeviceToDevice));
    }
    view = {cache.f32(), blocks, kBlock, width};
    std::vector<int32_t> order(static_cast<size_t>(blocks));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937(22));
    for (int64_t s = 0; s < b; ++s) {
      tables.emplace_back(order.begin() + s * per_seq, order.begin() + (s + 1) * per_seq);
    }
    for (int64_t s = 0; s < b; ++s) seqs.push_back({s, 1, ctx, tables[static_cast<size_t>(s)]});
    host_table = HostSeqTable::Build(seqs, b, kBlock);
    table = host_table.View();
    for (const std::vector<int32_t>* v :
         {&host_table.token_begin, &host_table.num_tokens, &host_table.context_len,
          &host_table.block_tables, &host_table.slots}) {
      device_arrays.push_back(DeviceInts(*v));
    }
    table.token_begin = static_cast<const int32_t*>(device_arrays[0].raw());
    table.num_tokens = static_cast<const int32_t*>(device_arrays[1].raw());
    table.context_len = static_cast<const int32_t*>(device_arrays[2].raw());
    table.block_tables = static_cast<const int32_t*>(device_arrays[3].raw());
    table.slots = static_cast<const int32_t*>(device_arrays[4].raw());
  }
};

constexpr Ops::MlaShape kShape{D::kHeads, D::kNope, D::kRope, D::kVHead, D::kKvLora, 0.1352f};

}  // namespace

void BenchMlaDecode(CudaOps& ops, const DeviceLimits& l, const Options& o) {
  std::printf("(c) MLA decode attention (absorbed form), 128 heads, float32 latent cache\n");
  std::printf("%5s %7s | %9s | %9s %10s %10s | %7s\n", "batch", "context", "ms", "HBM ms",
              "fp32 ms", "bf16 TC ms", "GB/s");
  const Tensor wkv_b =
      RandomWeight(DType::kBF16, D::kHeads * (D::kNope + D::kVHead), D::kKvLora, 31);
  for (int64_t b : {64, 128, 256}) {
    if (o.quick && b == 128) continue;
    MlaBatch batch(b, 4096);
    const Tensor q = RandomActivations(b, D::kHeads * (D::kNope + D::kRope), 32);
    Tensor out = cuda::AllocateDevice(DType::kF32, {b, D::kHeads * D::kVHead}).value();
    const double ms = MedianMs(ops.stream(), 2, o.iters, [&] {
      ops.MlaAttentionAbsorbed(q.mat(), wkv_b, batch.view, batch.table, kShape, out.mat());
    });
    const double cache_bytes = static_cast<double>(b) * batch.context * batch.view.width * 4;
    const double bytes = cache_bytes + static_cast<double>(wkv_b.nbytes());
    const double attn_flops = 2.0 * b * D::kHeads * batch.context * (batch.view.width + D::kKvLora);
    const double proj_flops = 2.0 * b * D::kHeads * 2 * D::kKvLora * D::kNope;
    const double hbm_ms = bytes / (l.copy_gbps * 1e9) * 1e3;
    const double fp32_ms =
        (attn_flops / (l.fp32_tflops * 1e12) + proj_flops / (l.bf16_tflops * 1e12)) * 1e3;
    const double tc_ms = (attn_flops + proj_flops) / (l.bf16_tflops * 1e12) * 1e3;
    std::printf("%5lld %7lld | %9.3f | %9.3f %10.3f %10.3f | %7.0f\n", static_cast<long long>(b),
                static_cast<long long>(batch.context), ms, hbm_ms, fp32_ms, tc_ms,
                bytes / (ms * 1e-3) / 1e9);
    if (o.json != nullptr) {
      std::fprintf(o.json,
                   "{\"section\":\"mla\",\"batch\":%lld,\"context\":%lld,\"ms\":%.5f,"
                   "\"hbm_ms\":%.5f,\"fp32_ms\":%.5f,\"tc_ms\":%.5f}\n",
                   static_cast<long long>(b), static_cast<long long>(batch.context), ms, hbm_ms,
                   fp32_ms, tc_ms);
    }
  }
  std::printf(
      "HBM ms: the latent cache read once; fp32 ms: attention FLOPs at the CUDA-core "
      "peak (this kernel's ceiling); bf16 TC ms: all FLOPs at the tensor-core peak (a "
      "FlashMLA-style kernel's)\n\n");
}

// (d) ------------------------------------------------------------------------

namespace {

// The weights of one decoder layer of each kind (FP8 projections and
// experts as DeepSeek ships them; bf16 router, kv_b and lm_head), reused for
// every layer of the projection: per-layer weights differ in the real model,
// but each layer's set already exceeds the L2 cache, so reuse does not flatter.
struct DecodeModel {
  Tensor attn_norm, q_a, q_a_norm, q_b, kv_a, kv_norm, wkv_b, o_proj;
  Tensor ffn_norm, router, bias, shared_gate, shared_up, shared_down;
  Tensor dense_gate, dense_up, dense_down, final_norm, lm_head;
  Experts experts{DType::kF8E4M3, D::kLocalExperts, D::kHidden, D::kExpertInter};
  RopeTable rope;

  DecodeModel() {
    const DType f8 = DType::kF8E4M3;
    attn_norm = RandomWeight(DType::kF32, 1, D::kHidden, 41, 1.0f);
    q_a = RandomWeight(f8, D::kQLora, D::kHidden, 42);
    q_a_norm = RandomWeight(DType::kF32, 1, D::kQLora, 43, 1.0f);
    q_b = RandomWeight(f8, D::kHeads * (D::kNope + D::kRope), D::kQLora, 44);
    kv_a = RandomWeight(f8, D::kKvLora + D::kRope, D::kHidden, 45);
    kv_norm = RandomWeight(DType::kF32, 1, D::kKvLora, 46, 1.0f);
    wkv_b = RandomWeight(DType::kBF16, D::kHeads * (D::kNope + D::kVHead), D::kKvLora, 47);
    o_proj = RandomWeight(f8, D::kHidden, D::kHeads * D::kVHead, 48);
    ffn_norm = RandomWeight(DType::kF32, 1, D::kHidden, 49, 1.0f);
    router = RandomWeight(DType::kBF16, D::kExperts, D::kHidden, 50);
    bias = RandomWeight(DType::kF32, 1, D::kExperts, 51, 0.1f);
    shared_gate = RandomWeight(f8, D::kExpertInter, D::kHidden, 52);
    shared_up = RandomWeight(f8, D::kExpertInter, D::kHidden, 53);
    shared_down = RandomWeight(f8, D::kHidden, D::kExpertInter, 54);
    dense_gate = RandomWeight(f8, D::kDenseInter, D::kHidden, 55);
    dense_up = RandomWeight(f8, D::kDenseInter, D::kHidden, 56);
    dense_down = RandomWeight(f8, D::kHidden, D::kDenseInter, 57);
    final_norm = RandomWeight(DType::kF32, 1, D::kHidden, 58, 1.0f);
    lm_head = RandomWeight(DType::kBF16, D::kVocab, D::kHidden, 59);
    RopeParams p;
    p.rotary_dim = D::kRope;
    p.yarn = true;
    p.factor = 40;
    p.mscale = p.mscale_all_dim = 1.0;
    rope = MakeRopeTable(p, RopeStyle::kInterleaved);
  }
};

// Activations of one decode step of `batch` sequences.
struct DecodeState {
  int64_t batch;
  Tensor x, normed, qa, q, kv, attn, delta, logits, router_logits, gains, ids, positions;
  Tensor draws, tokens, logprobs;
  RoutedLayer routed;

  explicit DecodeState(int64_t b) : batch(b), routed(b) {
    x = RandomActivations(b, D::kHidden, 61);
    normed = RandomActivations(b, D::kHidden, 62);
    qa = RandomActivations(b, D::kQLora, 63);
    q = RandomActivations(b, D::kHeads * (D::kNope + D::kRope), 64);
    kv = RandomActivations(b, D::kKvLora + D::kRope, 65);
    attn = RandomActivations(b, D::kHeads * D::kVHead, 66);
    delta = RandomActivations(b, D::kHidden, 67);
    logits = RandomActivations(b, D::kVocab, 68);
    router_logits = RandomActivations(b, D::kExperts, 69);
    gains = RandomActivations(b, D::kTopK, 70);
    ids = DeviceInts(std::vector<int32_t>(static_cast<size_t>(b * D::kTopK), 0));
    positions = DeviceInts(std::vector<int32_t>(static_cast<size_t>(b), 4095));
    draws = DeviceInts(std::vector<int32_t>(static_cast<size_t>(2 * b), 0));
    tokens = DeviceInts(std::vector<int32_t>(static_cast<size_t>(b), 0));
    logprobs = RandomActivations(b, 1, 71);
  }
};

void AttentionBlock(CudaOps& ops, const DecodeModel& m, DecodeState& s, MlaBatch& batch) {
  const int64_t b = s.batch, qk = D::kNope + D::kRope;
  const std::span<const int32_t> positions = IntSpan(s.positions, static_cast<size_t>(b));
  ops.RmsNorm(s.x.mat(), m.attn_norm, 1e-6f, s.normed.mat());
  ops.Linear(s.normed.mat(), m.q_a, s.qa.mat());
  ops.RmsNorm(s.qa.mat(), m.q_a_norm, 1e-6f, s.qa.mat());
  ops.Linear(s.qa.mat(), m.q_b, s.q.mat());
  const MatView q_heads{s.q.f32(), b * D::kHeads, qk, qk};
  ops.Rope(q_heads.Columns(D::kNope, D::kRope), D::kHeads, positions, m.rope);
  ops.Linear(s.normed.mat(), m.kv_a, s.kv.mat());
  const MatView latent = s.kv.mat().Columns(0, D::kKvLora);
  ops.RmsNorm(latent, m.kv_norm, 1e-6f, latent);
  ops.Rope(s.kv.mat().Columns(D::kKvLora, D::kRope), 1, positions, m.rope);
  ops.CacheWrite(s.kv.mat(), batch.table, batch.view);
  ops.MlaAttentionAbsorbed(s.q.mat(), m.wkv_b, batch.view, batch.table, kShape, s.attn.mat());
  ops.Linear(s.attn.mat(), m.o_proj, s.delta.mat());
  ops.Add(s.delta.mat(), s.x.mat());
}

void MoeBlock(CudaOps& ops, const DecodeModel& m, DecodeState& s) {
  const size_t entries = static_cast<size_t>(s.batch * D::kTopK);
  ops.RmsNorm(s.x.mat(), m.ffn_norm, 1e-6f, s.normed.mat());
  ops.Linear(s.normed.mat(), m.router, s.router_logits.mat());
  RoutingParams p;
  p.scoring = ScoringFunc::kSigmoid;
  p.correction_bias = m.bias.f32();
  p.num_experts = D::kExperts;
  p.top_k = D::kTopK;
  p.n_group = D::kGroups;
  p.topk_group = D::kTopKGroups;
  p.norm_topk_prob = true;
  p.routed_scaling_factor = 2.5f;
  const std::span<int32_t> ids{static_cast<int32_t*>(s.ids.raw()), entries};
  const std::span<float> gains{s.gains.f32(), entries};
  ops.RouteTopK(s.router_logits.mat(), p, ids, gains);
  ops.GatedFfn(s.normed.mat(), m.shared_gate, m.shared_up, m.shared_down, s.delta.mat());
  s.routed.Run(ops, m.experts, ids, gains, s.normed.mat(), s.delta.mat());
  ops.Add(s.delta.mat(), s.x.mat());
}

void DenseBlock(CudaOps& ops, const DecodeModel& m, DecodeState& s) {
  ops.RmsNorm(s.x.mat(), m.ffn_norm, 1e-6f, s.normed.mat());
  ops.GatedFfn(s.normed.mat(), m.dense_gate, m.dense_up, m.dense_down, s.delta.mat());
  ops.Add(s.delta.mat(), s.x.mat());
}

void Head(CudaOps& ops, const DecodeModel& m, DecodeState& s) {
  const auto b = static_cast<size_t>(s.batch);
  ops.RmsNorm(s.x.mat(), m.final_norm, 1e-6f, s.normed.mat());
  ops.Linear(s.normed.mat(), m.lm_head, s.logits.mat());
  const std::vector<SamplingParams> greedy(b);
  ops.Sample(s.logits.mat(), greedy, {static_cast<const uint64_t*>(s.draws.raw()), b},
             {static_cast<int32_t*>(s.tokens.raw()), b}, {s.logprobs.f32(), b});
}

}  // namespace

void BenchDecodeProjection(CudaOps& ops, const DeviceLimits& l, const Options& o) {
  std::printf(
      "(d) projected decode step of one EP8 rank of DeepSeek-V3 (%lld layers: %lld "
      "dense, %lld MoE), 4k context, FP8 weights, compute only\n",
      static_cast<long long>(D::kLayers), static_cast<long long>(D::kDenseLayers),
      static_cast<long long>(D::kLayers - D::kDenseLayers));
  std::printf("%5s | %8s %8s %8s %8s | %9s %10s | %14s\n", "batch", "attn ms", "moe ms", "dense ms",
              "head ms", "step ms", "tokens/s", "a2a ms (est.)");
  const DecodeModel model;
  for (int64_t b : {64, 128, 256}) {
    if (o.quick && b == 128) continue;
    MlaBatch batch(b, 4096);
    DecodeState state(b);
    const double attn =
        MedianMs(ops.stream(), 2, o.iters, [&] { AttentionBlock(ops, model, state, batch); });
    const double moe = MedianMs(ops.stream(), 2, o.iters, [&] { MoeBlock(ops, model, state); });
    const double dense = MedianMs(ops.stream(), 2, o.iters, [&] { DenseBlock(ops, model, state); });
    const double head = MedianMs(ops.stream(), 2, o.iters, [&] { Head(ops, model, state); });
    const double step =
        D::kLayers * attn + (D::kLayers - D::kDenseLayers) * moe + D::kDenseLayers * dense + head;
    // All-to-all, not measured on one GPU: per token and MoE layer, dispatch
    // 8 x 7168 bytes (fp8) and combine 8 x 7168 x 2 (bf16) over NVLink at
    // ~450 GB/s each way, 7/8 of it leaving the rank; hidden when the
    // two-micro-batch overlap works.
    const double a2a_ms =
        (D::kLayers - D::kDenseLayers) * b * D::kTopK * D::kHidden * 3.0 * 7 / 8 / 450e9 * 1e3;
    std::printf("%5lld | %8.3f %8.3f %8.3f %8.3f | %9.2f %10.0f | %14.2f\n",
                static_cast<long long>(b), attn, moe, dense, head, step, b / (step * 1e-3), a2a_ms);
    if (o.json != nullptr) {
      std::fprintf(o.json,
                   "{\"section\":\"decode\",\"batch\":%lld,\"attn_ms\":%.5f,\"moe_ms\":%.5f,"
                   "\"dense_ms\":%.5f,\"head_ms\":%.5f,\"step_ms\":%.4f,\"tokens_per_s\":%.1f}\n",
                   static_cast<long long>(b), attn, moe, dense, head, step, b / (step * 1e-3));
    }
  }
  (void)l;
  std::printf(
      "tokens/s = batch / (61 x attention + 58 x MoE + 3 x dense + head): one rank's "
      "own batch (data-parallel attention), its 32 experts serving ~batch routed pairs; "
      "all-to-all excluded (its estimate alone in the last column)\n\n");
}

}  // namespace moeserve::bench
