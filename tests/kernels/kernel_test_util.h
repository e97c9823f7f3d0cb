// Helpers shared by the op-set tests: seeded random data and a tiny paged
// cache whose unused slots hold NaN, so that an op reading outside a
// sequence's context poisons its output and fails the comparison.
#ifndef MOESERVE_TESTS_KERNELS_KERNEL_TEST_UTIL_H_
#define MOESERVE_TESTS_KERNELS_KERNEL_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "kernels/tensor.h"

namespace moeserve::testing {

// Uniform values in [-scale, scale), reproducible from `seed`.
inline std::vector<float> RandomVector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

inline Tensor RandomTensor(std::vector<int64_t> shape, uint32_t seed, float scale = 1.0f) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return Tensor::FromF32(std::move(shape), RandomVector(static_cast<size_t>(n), seed, scale));
}

// A paged cache of `num_blocks` blocks filled with NaN.
struct TestCache {
  std::vector<float> storage;
  PagedCacheView view;

  TestCache(int64_t num_blocks, int64_t block_size, int64_t width)
      : storage(static_cast<size_t>(num_blocks * block_size * width),
                std::numeric_limits<float>::quiet_NaN()),
        view{storage.data(), num_blocks, block_size, width} {}
  TestCache(const TestCache&) = delete;
  TestCache& operator=(const TestCache&) = delete;

  // The cache row of position `pos` of a sequence with `block_table`, by the
  // layout documented in ops.h (written out here independently of the ops).
  float* Row(const std::vector<int32_t>& block_table, int64_t pos) {
    const int32_t block = block_table[static_cast<size_t>(pos / view.block_size)];
    return storage.data() + (block * view.block_size + pos % view.block_size) * view.width;
  }
};

// Largest |a[i] - b[i]| and largest |b[i]|, to state relative agreement.
struct Deviation {
  double max_abs_diff = 0.0;
  double max_abs_ref = 0.0;
};
inline Deviation Compare(const std::vector<float>& got, const std::vector<double>& want) {
  Deviation d;
  for (size_t i = 0; i < got.size(); ++i) {
    const double diff = std::isnan(got[i]) ? INFINITY : std::fabs(got[i] - want[i]);
    d.max_abs_diff = std::max(d.max_abs_diff, diff);
    d.max_abs_ref = std::max(d.max_abs_ref, std::fabs(want[i]));
  }
  return d;
}

}  // namespace moeserve::testing

#endif  // MOESERVE_TESTS_KERNELS_KERNEL_TEST_UTIL_H_
