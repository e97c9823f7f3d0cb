// An Ops over host memory that runs every op on the CUDA op set: it copies
// the op's inputs to the device, runs the CUDA op, and copies its outputs
// back. It lets the unchanged model (runtime/model, which keeps activations
// and the KV cache in host Tensors today) run end to end on the GPU, so the
// golden-fixture tests check every CUDA op inside the real forward pass
// before the runtime keeps its tensors on the device.
//
// Weights are uploaded once per host buffer (the cache keeps a reference to
// the host tensor, so its address cannot be reused while cached), as float32
// or, in kBf16 mode, 2-D weights as bf16. Paged caches are mirrored on the
// device by address: CacheWrite writes the mirror and the host cache alike,
// attention reads the mirror. Slow by design (two copies per op); for tests.
#ifndef MOESERVE_TESTS_KERNELS_CUDA_STAGING_OPS_H_
#define MOESERVE_TESTS_KERNELS_CUDA_STAGING_OPS_H_

#include <map>
#include <span>
#include <vector>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/ops.h"

namespace moeserve::testing {

class StagingOps final : public Ops {
 public:
  enum class WeightMode { kF32, kBf16 };
  // `gpu` must outlive this object.
  StagingOps(cuda::CudaOps& gpu, WeightMode mode) : gpu_(gpu), mode_(mode) {}

  void Embedding(const Tensor& table, std::span<const int32_t> ids, MatView out) override;
  void RmsNorm(ConstMatView x, const Tensor& weight, float eps, MatView out) override;
  void Linear(ConstMatView x, const Tensor& w, MatView y) override;
  void Add(ConstMatView x, MatView y) override;
  void Rope(MatView x, int64_t heads_per_token, std::span<const int32_t> positions,
            const RopeTable& table) override;
  void CacheWrite(ConstMatView values, std::span<const SeqSlice> seqs,
                  const PagedCacheView& cache) override;
  void MlaAttentionPrefill(ConstMatView q, const Tensor& wkv_b, const PagedCacheView& cache,
                           std::span<const SeqSlice> seqs, const MlaShape& shape,
                           MatView out) override;
  void MlaAttentionAbsorbed(ConstMatView q, const Tensor& wkv_b, const PagedCacheView& cache,
                            std::span<const SeqSlice> seqs, const MlaShape& shape,
                            MatView out) override;
  void GqaAttention(ConstMatView q, const PagedCacheView& cache, std::span<const SeqSlice> seqs,
                    const GqaShape& shape, MatView out) override;
  void RouteTopK(ConstMatView logits, const RoutingParams& params, std::span<int32_t> expert_ids,
                 std::span<float> weights) override;
  void GatedFfn(ConstMatView x, const Tensor& gate, const Tensor& up, const Tensor& down,
                MatView out) override;
  void GatherRows(ConstMatView x, std::span<const int32_t> rows, MatView out) override;
  void ScatterAddRows(ConstMatView x, std::span<const int32_t> rows, std::span<const float> weights,
                      MatView y) override;
  void LogSoftmax(ConstMatView x, MatView out) override;
  void Sample(ConstMatView logits, std::span<const SamplingParams> params,
              std::span<const uint64_t> draw_index, std::span<int32_t> token_ids,
              std::span<float> logprobs) override;

 private:
  struct CachedWeight {
    Tensor host;  // keeps the host buffer (and so its address) alive
    Tensor device;
  };
  const Tensor& Weight(const Tensor& host);
  PagedCacheView Mirror(const PagedCacheView& host);

  cuda::CudaOps& gpu_;
  WeightMode mode_;
  std::map<const void*, CachedWeight> weights_;  // by host address
  std::map<const void*, Tensor> caches_;         // device mirrors, by host address
};

}  // namespace moeserve::testing

#endif  // MOESERVE_TESTS_KERNELS_CUDA_STAGING_OPS_H_
