#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cub/device/device_segmented_radix_sort.cuh>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernel_util.cuh"
#include "kernels/cuda/sampling_kernels.h"

namespace moeserve::cuda {
namespace {

constexpr int kThreads = 256;

// splitmix64's finalizer and the 53-bit uniform, exactly as the CPU twin.
__device__ inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

__device__ inline double UniformDraw(uint64_t seed, uint64_t draw_index) {
  const uint64_t bits = SplitMix64(seed ^ SplitMix64(draw_index));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

__device__ inline bool Sorts(const SampleRowParams& p, int64_t vocab) {
  return p.temperature > 0.0f && ((p.top_k > 0 && p.top_k < vocab) || p.top_p < 1.0f);
}

__global__ void ProbsKernel(SampleArgs a) {
  __shared__ float fscratch[kThreads / kWarp];
  __shared__ double dscratch[kThreads / kWarp];
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const float* x = a.logits + r * a.stride;
    const SampleRowParams p = a.params[r];
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < a.vocab; i += blockDim.x) m = fmaxf(m, x[i]);
    m = BlockMax(m, fscratch);
    double sum = 0.0;
    for (int64_t i = threadIdx.x; i < a.vocab; i += blockDim.x) {
      sum += exp(static_cast<double>(x[i]) - static_cast<double>(m));
    }
    sum = BlockSum(sum, dscratch);
    if (threadIdx.x == 0) {
      a.row_max[r] = m;
      a.row_sum[r] = sum;
    }
    double* probs = a.probs + r * a.vocab;
    int32_t* ids = a.ids == nullptr ? nullptr : a.ids + r * a.vocab;
    const double inv_t = p.temperature > 0.0f ? 1.0 / static_cast<double>(p.temperature) : 0.0;
    for (int64_t i = threadIdx.x; i < a.vocab; i += blockDim.x) {
      double q = 0.0;
      if (p.temperature > 0.0f) {
        q = exp((static_cast<double>(x[i]) - static_cast<double>(m)) * inv_t);
        if (isnan(q)) q = 0.0;
      }
      probs[i] = q;
      if (a.ids != nullptr) ids[i] = static_cast<int32_t>(i);
    }
  }
}

// The first maximal logit (the CPU twin's strict `>` scan): a NaN at 0 wins,
// other NaNs never do.
__device__ int32_t GreedyToken(const float* x, int64_t vocab, float* vscratch, int* iscratch) {
  float best = -INFINITY;
  int best_id = INT_MAX;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = x[i];
    if (isnan(v)) continue;
    if (v > best || (v == best && i < best_id)) {
      best = v;
      best_id = static_cast<int>(i);
    }
  }
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, offset);
    const int oi = __shfl_xor_sync(0xffffffffu, best_id, offset);
    if (ov > best || (ov == best && oi < best_id)) {
      best = ov;
      best_id = oi;
    }
  }
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  if (lane == 0) {
    vscratch[warp] = best;
    iscratch[warp] = best_id;
  }
  __syncthreads();
  best = -INFINITY;
  best_id = INT_MAX;
  for (int w = 0; w < static_cast<int>(blockDim.x) / kWarp; ++w) {
    if (vscratch[w] > best || (vscratch[w] == best && iscratch[w] < best_id)) {
      best = vscratch[w];
      best_id = iscratch[w];
    }
  }
  __syncthreads();
  if (isnan(x[0]) || best_id == INT_MAX) return 0;
  return best_id;
}

// The CPU twin's FilterCandidates + InverseCdf over candidates in sorted
// order: sorted_probs[0, n) with their ids. Runs on one thread.
__device__ int32_t ChooseSorted(const double* sp, const int32_t* sid, int64_t vocab,
                                const SampleRowParams& p, double u) {
  int64_t n = (p.top_k > 0 && p.top_k < vocab) ? p.top_k : vocab;
  if (p.top_p < 1.0f) {
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) total += sp[i];
    double cumulative = 0.0;
    int64_t keep = 0;
    while (keep < n) {
      cumulative += sp[keep++] / total;
      if (cumulative >= static_cast<double>(p.top_p)) break;
    }
    n = keep > 1 ? keep : 1;
  }
  if (p.min_p > 0.0f) {
    double mx = 0.0;
    for (int64_t i = 0; i < n; ++i) mx = fmax(mx, sp[i]);
    const double threshold = static_cast<double>(p.min_p) * mx;
    int64_t kept = 0;  // descending order: the kept ones are a prefix
    while (kept < n && !(sp[kept] < threshold)) ++kept;
    n = kept;
  }
  if (n == 0) return sid[0];
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += sp[i];
  const double target = u * total;
  double cumulative = 0.0;
  int32_t last_positive = sid[0];
  for (int64_t i = 0; i < n; ++i) {
    const double q = sp[i];
    if (q <= 0.0) continue;
    cumulative += q;
    last_positive = sid[i];
    if (cumulative > target) return sid[i];
  }
  return last_positive;
}

// Same, candidates in id order (no top_k, no top_p): min_p keeps ids with
// probability >= min_p * max, `mx` being the row's largest probability.
__device__ int32_t ChooseNatural(const double* probs, int64_t vocab, const SampleRowParams& p,
                                 double mx, double u) {
  const double threshold = p.min_p > 0.0f ? static_cast<double>(p.min_p) * mx : -1.0;
  double total = 0.0;
  int32_t first = -1;
  for (int64_t i = 0; i < vocab; ++i) {
    if (probs[i] < threshold) continue;
    if (first < 0) first = static_cast<int32_t>(i);
    total += probs[i];
  }
  if (first < 0) return 0;
  const double target = u * total;
  double cumulative = 0.0;
  int32_t last_positive = first;
  for (int64_t i = 0; i < vocab; ++i) {
    const double q = probs[i];
    if (q < threshold || q <= 0.0) continue;
    cumulative += q;
    last_positive = static_cast<int32_t>(i);
    if (cumulative > target) return last_positive;
  }
  return last_positive;
}

__global__ void ChooseKernel(SampleArgs a) {
  __shared__ float vscratch[kThreads / kWarp];
  __shared__ int iscratch[kThreads / kWarp];
  __shared__ double dscratch[kThreads / kWarp];
  __shared__ int32_t chosen;
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const float* x = a.logits + r * a.stride;
    const SampleRowParams p = a.params[r];
    if (p.temperature <= 0.0f) {
      const int32_t t = GreedyToken(x, a.vocab, vscratch, iscratch);
      if (threadIdx.x == 0) chosen = t;
    } else if (Sorts(p, a.vocab)) {
      if (threadIdx.x == 0) {
        chosen = ChooseSorted(a.sorted_probs + r * a.vocab, a.sorted_ids + r * a.vocab, a.vocab, p,
                              UniformDraw(p.seed, a.draw_index[r]));
      }
    } else {
      const double* probs = a.probs + r * a.vocab;
      double mx = 0.0;  // max is exact in any order
      for (int64_t i = threadIdx.x; i < a.vocab; i += blockDim.x) mx = fmax(mx, probs[i]);
      for (int offset = kWarp / 2; offset > 0; offset /= 2) {
        mx = fmax(mx, __shfl_xor_sync(0xffffffffu, mx, offset));
      }
      if (threadIdx.x % kWarp == 0) dscratch[threadIdx.x / kWarp] = mx;
      __syncthreads();
      mx = 0.0;
      for (int w = 0; w < static_cast<int>(blockDim.x) / kWarp; ++w) mx = fmax(mx, dscratch[w]);
      if (threadIdx.x == 0) {
        chosen = ChooseNatural(probs, a.vocab, p, mx, UniformDraw(p.seed, a.draw_index[r]));
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      const int32_t t = chosen;
      a.token_ids[r] = t;
      a.logprobs[r] = static_cast<float>(static_cast<double>(x[t]) -
                                         static_cast<double>(a.row_max[r]) - log(a.row_sum[r]));
    }
    __syncthreads();
  }
}

}  // namespace

bool RowSorts(const SampleRowParams& p, int64_t vocab) {
  return p.temperature > 0.0f && ((p.top_k > 0 && p.top_k < vocab) || p.top_p < 1.0f);
}

void LaunchSampleProbs(const SampleArgs& args, cudaStream_t stream) {
  if (args.rows == 0) return;
  ProbsKernel<<<GridFor(args.rows, 1), kThreads, 0, stream>>>(args);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

size_t SortTempBytes(int64_t rows, int64_t vocab, int64_t segments) {
  size_t bytes = 0;
  const int32_t* offsets = nullptr;
  MOESERVE_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
      nullptr, bytes, static_cast<const double*>(nullptr), static_cast<double*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
      static_cast<int>(rows * vocab), static_cast<int>(segments), offsets, offsets));
  return bytes;
}

void SortRowsDescending(const SampleArgs& args, const int32_t* segment_begin,
                        const int32_t* segment_end, int64_t segments, void* temp, size_t temp_bytes,
                        cudaStream_t stream) {
  if (segments == 0) return;
  MOESERVE_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
      temp, temp_bytes, args.probs, args.sorted_probs, args.ids, args.sorted_ids,
      static_cast<int>(args.rows * args.vocab), static_cast<int>(segments), segment_begin,
      segment_end, 0, static_cast<int>(sizeof(double) * 8), stream));
}

void LaunchSampleChoose(const SampleArgs& args, cudaStream_t stream) {
  if (args.rows == 0) return;
  ChooseKernel<<<GridFor(args.rows, 1), kThreads, 0, stream>>>(args);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace moeserve::cuda
