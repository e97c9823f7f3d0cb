#include "kernels/null_ops.h"

namespace moeserve {
namespace {

class NullOps final : public Ops {
 public:
  void Embedding(const Tensor&, std::span<const int32_t>, MatView) override {}
  void RmsNorm(ConstMatView, const Tensor&, float, MatView) override {}
  void Linear(ConstMatView, const Tensor&, MatView) override {}
  void Add(ConstMatView, MatView) override {}
  void Rope(MatView, int64_t, std::span<const int32_t>, const RopeTable&) override {}
  void CacheWrite(ConstMatView, const SeqTable&, const PagedCacheView&) override {}
  void MlaAttentionPrefill(ConstMatView, const Tensor&, const PagedCacheView&, const SeqTable&,
                           std::span<const SeqSlice>, const MlaShape&, MatView) override {}
  void MlaAttentionAbsorbed(ConstMatView, const Tensor&, const PagedCacheView&, const SeqTable&,
                            const MlaShape&, MatView) override {}
  void GqaAttention(ConstMatView, const PagedCacheView&, const SeqTable&, const GqaShape&,
                    MatView) override {}
  void RouteTopK(ConstMatView, const RoutingParams&, std::span<int32_t>,
                 std::span<float>) override {}
  void GatedFfn(ConstMatView, const Tensor&, const Tensor&, const Tensor&, MatView) override {}
  void GatherRows(ConstMatView, std::span<const int32_t>, MatView) override {}
  void ScatterAddRows(ConstMatView, std::span<const int32_t>, std::span<const float>,
                      MatView) override {}
  void MoeDispatchLayout(ConstMatView, std::span<const int32_t>, int64_t, const MoeSlotTable&,
                         int32_t, int64_t, MatView, std::span<int32_t>, std::span<int32_t>,
                         std::span<int64_t>, std::span<const int32_t>) override {}
  void GroupedGatedFfn(ConstMatView, std::span<const int32_t>, int64_t, int64_t,
                       std::span<const ExpertFfnWeights>, MatView) override {}
  void MoeCombineReduce(ConstMatView, std::span<const int32_t>, std::span<const int32_t>,
                        std::span<const float>, int64_t, ConstMatView, MatView) override {}
  void LogSoftmax(ConstMatView, MatView) override {}
  void Sample(ConstMatView, std::span<const SamplingParams>, std::span<const uint64_t>,
              std::span<int32_t>, std::span<float>) override {}
};

}  // namespace

std::unique_ptr<Ops> CreateNullOps() { return std::make_unique<NullOps>(); }

}  // namespace moeserve
