// Device-side helpers shared by the CUDA op set's kernels: reductions,
// strided views, the error word. Included by .cu files only.
#ifndef MOESERVE_KERNELS_CUDA_KERNEL_UTIL_CUH_
#define MOESERVE_KERNELS_CUDA_KERNEL_UTIL_CUH_

#include <cuda_runtime.h>

#include <cstdint>

namespace moeserve::cuda {

inline constexpr int kWarp = 32;

// Blocks needed for `n` items at `per_block` each, capped at what a grid's x
// dimension takes (kernels loop when the cap bites).
inline unsigned GridFor(int64_t n, int64_t per_block) {
  const int64_t blocks = (n + per_block - 1) / per_block;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > (1 << 30) ? (1 << 30) : blocks));
}

__device__ inline void RaiseError(uint32_t* error_word, uint32_t bit) {
  if (error_word != nullptr) atomicOr(error_word, bit);
}

template <class T>
__device__ inline T WarpSum(T v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Maximum that ignores NaN like std::fmax (a NaN loses to any number).
__device__ inline float WarpMax(float v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// Sum over the block; every thread gets the result. `scratch` holds one T
// per warp. Ends with a barrier, so `scratch` may be reused right after.
template <class T>
__device__ inline T BlockSum(T v, T* scratch) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int warps = (blockDim.x + kWarp - 1) / kWarp;
  v = WarpSum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T total = T(0);
  for (int w = 0; w < warps; ++w) total += scratch[w];  // same order in every thread
  __syncthreads();
  return total;
}

__device__ inline float BlockMax(float v, float* scratch) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int warps = (blockDim.x + kWarp - 1) / kWarp;
  v = WarpMax(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float best = -INFINITY;
  for (int w = 0; w < warps; ++w) best = fmaxf(best, scratch[w]);
  __syncthreads();
  return best;
}

}  // namespace moeserve::cuda

#endif  // MOESERVE_KERNELS_CUDA_KERNEL_UTIL_CUH_
