// Top-k routing, one warp per token. Lane l holds experts l, l + 32, ...
// (at most 16 each). Reductions carry (selection score, expert id, score)
// triples and break ties toward the lower id, so the experts come out in the
// CPU twin's order; the final weight arithmetic runs on one lane in the CPU
// twin's order.
#include <cuda_runtime.h>

#include <climits>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernel_util.cuh"
#include "kernels/cuda/routing.h"

namespace moeserve::cuda {
namespace {

constexpr int kSlots = kMaxRoutedExperts / kWarp;  // experts per lane, at most
constexpr int kWarpsPerBlock = 4;

struct Candidate {
  float select;  // selection score (the key)
  int id;        // expert id (the tie break)
  float score;   // unbiased score (the weight), carried along
};

__device__ inline bool Better(const Candidate& a, const Candidate& b) {
  return a.select > b.select || (a.select == b.select && a.id < b.id);
}

__device__ inline Candidate WarpBest(Candidate c) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    Candidate o;
    o.select = __shfl_xor_sync(0xffffffffu, c.select, offset);
    o.id = __shfl_xor_sync(0xffffffffu, c.id, offset);
    o.score = __shfl_xor_sync(0xffffffffu, c.score, offset);
    if (Better(o, c)) c = o;
  }
  return c;
}

__global__ void RouteKernel(RoutingArgs a) {
  const int lane = threadIdx.x % kWarp;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (t >= a.tokens) return;  // whole warps leave together
  const float* x = a.logits + t * a.stride;
  const int n = a.num_experts;

  float score[kSlots], select[kSlots];
  if (a.sigmoid) {
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
      const int e = lane + i * kWarp;
      score[i] = e < n ? __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-x[e]))) : 0.0f;
    }
  } else {
    float mx = -INFINITY;
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
      const int e = lane + i * kWarp;
      if (e < n) mx = fmaxf(mx, x[e]);
    }
    mx = WarpMax(mx);
    double sum = 0.0;
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
      const int e = lane + i * kWarp;
      score[i] = e < n ? expf(__fsub_rn(x[e], mx)) : 0.0f;
      sum += static_cast<double>(score[i]);
    }
    const float denom = static_cast<float>(WarpSum(sum));
#pragma unroll
    for (int i = 0; i < kSlots; ++i) score[i] = __fdiv_rn(score[i], denom);
  }
#pragma unroll
  for (int i = 0; i < kSlots; ++i) {
    const int e = lane + i * kWarp;
    float s = score[i];
    if (e < n && a.bias != nullptr) s = __fadd_rn(s, a.bias[e]);
    select[i] = (e >= n || isnan(s)) ? -INFINITY : s;
  }

  if (a.n_group > 1) {
    const int per_group = n / a.n_group;
    float group_score[kMaxExpertGroups];
#pragma unroll
    for (int g = 0; g < kMaxExpertGroups; ++g) {
      if (g >= a.n_group) break;
      float top1 = -INFINITY, top2 = -INFINITY;
#pragma unroll
      for (int i = 0; i < kSlots; ++i) {
        const int e = lane + i * kWarp;
        if (e < n && e / per_group == g) {
          const float v = select[i];
          top2 = fmaxf(top2, fminf(top1, v));
          top1 = fmaxf(top1, v);
        }
      }
      for (int offset = kWarp / 2; offset > 0; offset /= 2) {
        const float o1 = __shfl_xor_sync(0xffffffffu, top1, offset);
        const float o2 = __shfl_xor_sync(0xffffffffu, top2, offset);
        top2 = fmaxf(fminf(top1, o1), fmaxf(top2, o2));
        top1 = fmaxf(top1, o1);
      }
      // As the CPU twin: accumulate(top, 0.0f), i.e. (0 + top1) + top2.
      group_score[g] = a.bias != nullptr
                           ? (per_group >= 2 ? __fadd_rn(__fadd_rn(0.0f, top1), top2) : top1)
                           : top1;
    }
    // The best topk_group groups (ties to the lower group), same on every lane.
    uint32_t keep = 0;
    for (int k = 0; k < a.topk_group; ++k) {
      int best = -1;
      for (int g = 0; g < a.n_group; ++g) {
        if ((keep >> g) & 1u) continue;
        if (best < 0 || group_score[g] > group_score[best]) best = g;
      }
      keep |= 1u << best;
    }
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
      const int e = lane + i * kWarp;
      if (e < n && ((keep >> (e / per_group)) & 1u) == 0) select[i] = -INFINITY;
    }
  }

  uint32_t taken = 0;  // bit i: this lane's expert lane + 32 i is chosen
  Candidate chosen[32];
  for (int k = 0; k < a.top_k; ++k) {
    Candidate best{-INFINITY, INT_MAX, 0.0f};
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
      const int e = lane + i * kWarp;
      if (e >= n || ((taken >> i) & 1u)) continue;
      const Candidate c{select[i], e, score[i]};
      if (Better(c, best)) best = c;
    }
    best = WarpBest(best);
    if (best.id % kWarp == lane) taken |= 1u << (best.id / kWarp);
    if (lane == 0 && k < 32) chosen[k] = best;
  }
  if (lane != 0) return;
  float sum = 0.0f;
  for (int k = 0; k < a.top_k; ++k) sum = __fadd_rn(sum, chosen[k].score);
  for (int k = 0; k < a.top_k; ++k) {
    float w = chosen[k].score;
    if (a.norm_topk_prob) w = __fdiv_rn(w, __fadd_rn(sum, 1e-20f));
    w = __fmul_rn(w, a.routed_scaling_factor);
    a.expert_ids[t * a.top_k + k] = chosen[k].id;
    a.weights[t * a.top_k + k] = w;
  }
}

}  // namespace

void LaunchRouteTopK(const RoutingArgs& args, cudaStream_t stream) {
  if (args.tokens == 0) return;
  Require(args.num_experts > 0 && args.num_experts <= kMaxRoutedExperts,
          "routing: num_experts must lie in [1, 512] on the GPU");
  Require(args.n_group <= kMaxExpertGroups, "routing: n_group must be <= 32 on the GPU");
  Require(args.top_k <= 32, "routing: top_k must be <= 32 on the GPU");
  RouteKernel<<<GridFor(args.tokens, kWarpsPerBlock), kWarpsPerBlock * kWarp, 0, stream>>>(args);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace moeserve::cuda
