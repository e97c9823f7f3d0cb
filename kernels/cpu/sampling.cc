// Token sampling on the CPU.
//
// temperature <= 0 is greedy: the first (lowest id) maximum logit.
// Otherwise, in double precision:
//   probs   = softmax(logits / temperature)
//   top_k   keeps the k most probable tokens (when 0 < k < vocab)
//   top_p   keeps, of what is left, the shortest prefix in descending
//           probability whose renormalized mass reaches top_p (>= 1 token)
//   min_p   keeps the tokens with probability >= min_p * the largest one
// and the token is the inverse CDF of the kept (renormalized) mass at a
// uniform u in [0, 1). Orderings break ties toward the lower token id.
//
// u comes from a counter-based hash of (seed, draw_index), not from a stream
// generator: a request draws the same token whatever else shares its batch
// and however the batch is split into calls.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/cpu/cpu_ops_impl.h"

namespace moeserve::cpu {
namespace {

// splitmix64's finalizer: a bijection of 64-bit words with good avalanche.
uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) with 53 random bits.
double UniformDraw(uint64_t seed, uint64_t draw_index) {
  const uint64_t bits = SplitMix64(seed ^ SplitMix64(draw_index));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

int32_t Argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (x[i] > x[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

// log_softmax(x)[token], in double.
float LogProb(const float* x, int64_t n, int32_t token) {
  float max = -INFINITY;
  for (int64_t i = 0; i < n; ++i) max = std::fmax(max, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i]) - max);
  return static_cast<float>(static_cast<double>(x[token]) - max - std::log(sum));
}

// Unnormalized softmax(x / temperature); NaN becomes 0 so that orderings
// over the probabilities stay strict weak orders.
std::vector<double> TemperedProbs(const float* x, int64_t n, float temperature) {
  float max = -INFINITY;
  for (int64_t i = 0; i < n; ++i) max = std::fmax(max, x[i]);
  std::vector<double> probs(static_cast<size_t>(n));
  const double inv_t = 1.0 / static_cast<double>(temperature);
  for (int64_t i = 0; i < n; ++i) {
    const double p = std::exp((static_cast<double>(x[i]) - max) * inv_t);
    probs[static_cast<size_t>(i)] = std::isnan(p) ? 0.0 : p;
  }
  return probs;
}

// The candidate tokens left by top_k, top_p and min_p. When the result is
// sorted (any of top_k / top_p active) it is in descending probability.
std::vector<int32_t> FilterCandidates(const std::vector<double>& probs, const SamplingParams& sp) {
  const int64_t n = static_cast<int64_t>(probs.size());
  const auto more_probable = [&](int32_t a, int32_t b) {
    const double pa = probs[static_cast<size_t>(a)], pb = probs[static_cast<size_t>(b)];
    return pa > pb || (pa == pb && a < b);
  };
  std::vector<int32_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  if (sp.top_k > 0 && sp.top_k < n) {
    std::partial_sort(ids.begin(), ids.begin() + sp.top_k, ids.end(), more_probable);
    ids.resize(static_cast<size_t>(sp.top_k));
  } else if (sp.top_p < 1.0f) {
    std::sort(ids.begin(), ids.end(), more_probable);
  }
  if (sp.top_p < 1.0f) {
    double total = 0.0;
    for (int32_t id : ids) total += probs[static_cast<size_t>(id)];
    double cumulative = 0.0;
    size_t keep = 0;
    while (keep < ids.size()) {
      cumulative += probs[static_cast<size_t>(ids[keep++])] / total;
      if (cumulative >= sp.top_p) break;
    }
    ids.resize(std::max<size_t>(keep, 1));
  }
  if (sp.min_p > 0.0f) {
    double max = 0.0;
    for (int32_t id : ids) max = std::max(max, probs[static_cast<size_t>(id)]);
    const double threshold = static_cast<double>(sp.min_p) * max;
    std::erase_if(ids, [&](int32_t id) { return probs[static_cast<size_t>(id)] < threshold; });
  }
  return ids;
}

// Inverse CDF over `ids` (in their order) of the renormalized mass at u.
int32_t InverseCdf(const std::vector<double>& probs, const std::vector<int32_t>& ids, double u) {
  double total = 0.0;
  for (int32_t id : ids) total += probs[static_cast<size_t>(id)];
  const double target = u * total;
  double cumulative = 0.0;
  int32_t last_positive = ids.front();
  for (int32_t id : ids) {
    const double p = probs[static_cast<size_t>(id)];
    if (p <= 0.0) continue;
    cumulative += p;
    last_positive = id;
    if (cumulative > target) return id;
  }
  return last_positive;  // rounding left the cumulative mass a hair short
}

}  // namespace

void CpuOps::Sample(ConstMatView logits, std::span<const SamplingParams> params,
                    std::span<const uint64_t> draw_index, std::span<int32_t> token_ids,
                    std::span<float> logprobs) {
  RequireView(logits, "sample logits");
  const size_t rows = static_cast<size_t>(logits.rows);
  Require(params.size() == rows && draw_index.size() == rows && token_ids.size() == rows &&
              logprobs.size() == rows,
          "sample: params, draw_index, token_ids and logprobs need one entry per row");
  Require(logits.rows == 0 || logits.cols > 0, "sample: empty vocabulary");
  for (size_t r = 0; r < rows; ++r) {
    const float* x = logits.row(static_cast<int64_t>(r));
    const SamplingParams& sp = params[r];
    int32_t token;
    if (sp.temperature <= 0.0f) {
      token = Argmax(x, logits.cols);
    } else {
      const std::vector<double> probs = TemperedProbs(x, logits.cols, sp.temperature);
      token = InverseCdf(probs, FilterCandidates(probs, sp), UniformDraw(sp.seed, draw_index[r]));
    }
    token_ids[r] = token;
    logprobs[r] = LogProb(x, logits.cols, token);
  }
}

}  // namespace moeserve::cpu
