// Launcher of MoE top-k routing (one warp per token), the device twin of
// kernels/cpu/routing.cc: sigmoid or softmax scores, the correction bias
// steering selection only, group-limited selection (best topk_group groups
// by top-2 sum with a bias, by maximum without), top_k by selection score
// with ties to the lower expert id, weights normalized and scaled.
#ifndef MOESERVE_KERNELS_CUDA_ROUTING_H_
#define MOESERVE_KERNELS_CUDA_ROUTING_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace moeserve::cuda {

inline constexpr int64_t kMaxRoutedExperts = 512;
inline constexpr int64_t kMaxExpertGroups = 32;

struct RoutingArgs {
  const float* logits = nullptr;  // [tokens, num_experts], row stride `stride`
  int64_t stride = 0;
  int64_t tokens = 0;
  int32_t num_experts = 0;  // <= kMaxRoutedExperts
  int32_t top_k = 0;
  int32_t n_group = 1;  // <= kMaxExpertGroups
  int32_t topk_group = 1;
  bool sigmoid = false;
  const float* bias = nullptr;  // [num_experts] or null
  bool norm_topk_prob = false;
  float routed_scaling_factor = 1.0f;
  int32_t* expert_ids = nullptr;  // [tokens * top_k]
  float* weights = nullptr;       // [tokens * top_k]
};

void LaunchRouteTopK(const RoutingArgs& args, cudaStream_t stream);

}  // namespace moeserve::cuda

#endif  // MOESERVE_KERNELS_CUDA_ROUTING_H_
