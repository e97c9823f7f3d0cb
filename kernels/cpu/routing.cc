// MoE routing on the CPU, following DeepSeek-V3's Gate.forward
// (inference/model.py) and Hugging Face's Qwen3-MoE router:
//   scores   = sigmoid(logits) or softmax(logits), float32
//   select   = scores + correction_bias (the bias only steers selection)
//   groups   = when n_group > 1, keep the topk_group groups with the best
//              group score (sum of the group's top two selection scores when
//              a bias is given, else the group's maximum); the other groups'
//              experts become ineligible
//   experts  = the top_k eligible experts by selection score
//   weights  = the unbiased scores of those experts, divided by their sum
//              (+1e-20) when norm_topk_prob, times routed_scaling_factor.
// Ties are broken toward the lower group or expert id (torch.topk leaves them
// unspecified), so the result is deterministic; experts are output in
// descending selection score.
#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <vector>

#include "kernels/cpu/cpu_ops_impl.h"

namespace moeserve::cpu {
namespace {

// Indices of the `k` largest of `key`, largest first, ties to the lower
// index. NaN keys must have been replaced beforehand (they break ordering).
std::vector<int64_t> TopIndices(const std::vector<float>& key, int64_t k) {
  std::vector<int64_t> idx(key.size());
  std::iota(idx.begin(), idx.end(), int64_t{0});
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int64_t a, int64_t b) {
    const float ka = key[static_cast<size_t>(a)], kb = key[static_cast<size_t>(b)];
    return ka > kb || (ka == kb && a < b);
  });
  idx.resize(static_cast<size_t>(k));
  return idx;
}

// Router scores of one row of logits, in float32.
void ScoreRow(const float* logits, int64_t n, ScoringFunc func, std::vector<float>& scores) {
  scores.resize(static_cast<size_t>(n));
  if (func == ScoringFunc::kSigmoid) {
    for (int64_t e = 0; e < n; ++e)
      scores[static_cast<size_t>(e)] = 1.0f / (1.0f + std::exp(-logits[e]));
    return;
  }
  float max = -INFINITY;
  for (int64_t e = 0; e < n; ++e) max = std::fmax(max, logits[e]);
  double sum = 0.0;  // accumulated in double: independent of summation order
  for (int64_t e = 0; e < n; ++e) {
    scores[static_cast<size_t>(e)] = std::exp(logits[e] - max);
    sum += scores[static_cast<size_t>(e)];
  }
  const float denom = static_cast<float>(sum);
  for (float& s : scores) s /= denom;
}

// Sets the selection scores of every expert outside the topk_group best
// groups to -inf.
void MaskGroups(const RoutingParams& p, std::vector<float>& select) {
  const int64_t per_group = p.num_experts / p.n_group;
  std::vector<float> group_score(static_cast<size_t>(p.n_group));
  for (int64_t g = 0; g < p.n_group; ++g) {
    const auto first = select.begin() + g * per_group;
    if (p.correction_bias != nullptr) {
      std::vector<float> members(first, first + per_group);
      const int64_t top = std::min<int64_t>(2, per_group);
      std::partial_sort(members.begin(), members.begin() + top, members.end(), std::greater<>());
      group_score[static_cast<size_t>(g)] =
          std::accumulate(members.begin(), members.begin() + top, 0.0f);
    } else {
      group_score[static_cast<size_t>(g)] = *std::max_element(first, first + per_group);
    }
  }
  std::vector<bool> keep(static_cast<size_t>(p.n_group), false);
  for (int64_t g : TopIndices(group_score, p.topk_group)) keep[static_cast<size_t>(g)] = true;
  for (int64_t g = 0; g < p.n_group; ++g) {
    if (keep[static_cast<size_t>(g)]) continue;
    std::fill(select.begin() + g * per_group, select.begin() + (g + 1) * per_group, -INFINITY);
  }
}

void RequireRouting(ConstMatView logits, const RoutingParams& p, size_t ids, size_t weights) {
  RequireView(logits, "routing logits");
  Require(p.num_experts > 0 && logits.cols == p.num_experts,
          "routing logits must be [T, num_experts]");
  Require(p.n_group >= 1 && p.num_experts % p.n_group == 0,
          "routing: num_experts must be a multiple of n_group");
  Require(p.n_group == 1 || (p.topk_group >= 1 && p.topk_group <= p.n_group),
          "routing: topk_group must lie in [1, n_group]");
  const int64_t eligible =
      p.n_group == 1 ? p.num_experts : p.topk_group * (p.num_experts / p.n_group);
  Require(p.top_k >= 1 && p.top_k <= eligible, "routing: top_k outside [1, eligible experts]");
  const size_t want = static_cast<size_t>(logits.rows * p.top_k);
  Require(ids == want && weights == want, "routing outputs must hold T * top_k entries");
}

}  // namespace

void CpuOps::RouteTopK(ConstMatView logits, const RoutingParams& p, std::span<int32_t> expert_ids,
                       std::span<float> weights) {
  RequireRouting(logits, p, expert_ids.size(), weights.size());
  std::vector<float> scores, select;
  for (int64_t t = 0; t < logits.rows; ++t) {
    ScoreRow(logits.row(t), p.num_experts, p.scoring, scores);
    select = scores;
    for (int64_t e = 0; e < p.num_experts; ++e) {
      float& s = select[static_cast<size_t>(e)];
      if (p.correction_bias != nullptr) s += p.correction_bias[e];
      if (std::isnan(s)) s = -INFINITY;  // a NaN would break the ordering below
    }
    if (p.n_group > 1) MaskGroups(p, select);
    const std::vector<int64_t> chosen = TopIndices(select, p.top_k);

    float* w = weights.data() + t * p.top_k;
    int32_t* ids = expert_ids.data() + t * p.top_k;
    float sum = 0.0f;
    for (int64_t i = 0; i < p.top_k; ++i) {
      const int64_t e = chosen[static_cast<size_t>(i)];
      ids[i] = static_cast<int32_t>(e);
      w[i] = scores[static_cast<size_t>(e)];
      sum += w[i];
    }
    for (int64_t i = 0; i < p.top_k; ++i) {
      if (p.norm_topk_prob) w[i] /= sum + 1e-20f;
      w[i] *= p.routed_scaling_factor;
    }
  }
}

}  // namespace moeserve::cpu
