// The CPU op set's class, shared by the files that implement it:
//   cpu_ops.cc    dense and elementwise ops, RoPE, cache writes
//   attention.cc  MLA (prefill and absorbed forms) and GQA attention
//   routing.cc    MoE top-k routing
//   sampling.cc   token sampling
//   moe.cc        the MoE block's fixed-capacity dispatch, experts and reduce
// Internal to kernels/cpu/: everything else reaches it through CreateCpuOps().
//
// Shape contracts are checked on every call with Require() (always on, also
// in release builds): a violated contract is a bug in the caller, and the
// checks are per call or per row, never per element of a product.
#ifndef MOESERVE_KERNELS_CPU_CPU_OPS_IMPL_H_
#define MOESERVE_KERNELS_CPU_CPU_OPS_IMPL_H_

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/ops.h"

namespace moeserve::cpu {

// Aborts with `what` on stderr when `ok` is false. For broken internal
// invariants only (a caller violating an op's shape contract).
void Require(bool ok, const char* what);

// The 2-D float32 view of a weight, after checking that it is a rank-2 F32
// tensor of shape [rows, cols]. `name` appears in the abort message.
ConstMatView WeightMat(const Tensor& w, int64_t rows, int64_t cols, const char* name);

// Requires `v` to be a well-formed view: non-negative sizes and, when it has
// more than one row, stride >= cols.
void RequireView(ConstMatView v, const char* name);

// Checks one sequence of a ragged batch against a batch of `batch_rows`
// token rows and a cache: its rows lie in the batch, num_tokens <=
// context_len, and its block table covers [0, context_len) with block ids
// inside the cache.
void RequireSeq(const SeqSlice& seq, int64_t batch_rows, const PagedCacheView& cache);

// A SeqTable's sequences, read from its arrays (host memory on the CPU) when
// the op runs, entries of no tokens left out; each checked with RequireSeq
// against `batch_rows` and the cache, and the table against its bounds.
std::vector<SeqSlice> ReadSeqs(const SeqTable& table, int64_t batch_rows,
                               const PagedCacheView& cache);

class CpuOps final : public Ops {
 public:
  void Embedding(const Tensor& table, std::span<const int32_t> ids, MatView out) override;
  void RmsNorm(ConstMatView x, const Tensor& weight, float eps, MatView out) override;
  void Linear(ConstMatView x, const Tensor& w, MatView y) override;
  void Add(ConstMatView x, MatView y) override;
  void Rope(MatView x, int64_t heads_per_token, std::span<const int32_t> positions,
            const RopeTable& table) override;
  void CacheWrite(ConstMatView values, const SeqTable& seqs, const PagedCacheView& cache) override;
  void MlaAttentionPrefill(ConstMatView q, const Tensor& wkv_b, const PagedCacheView& cache,
                           const SeqTable& seqs, std::span<const SeqSlice> host,
                           const MlaShape& shape, MatView out) override;
  void MlaAttentionAbsorbed(ConstMatView q, const Tensor& wkv_b, const PagedCacheView& cache,
                            const SeqTable& seqs, const MlaShape& shape, MatView out) override;
  void GqaAttention(ConstMatView q, const PagedCacheView& cache, const SeqTable& seqs,
                    const GqaShape& shape, MatView out) override;
  void RouteTopK(ConstMatView logits, const RoutingParams& params, std::span<int32_t> expert_ids,
                 std::span<float> weights) override;
  void GatedFfn(ConstMatView x, const Tensor& gate, const Tensor& up, const Tensor& down,
                MatView out) override;
  void GatherRows(ConstMatView x, std::span<const int32_t> rows, MatView out) override;
  void ScatterAddRows(ConstMatView x, std::span<const int32_t> rows, std::span<const float> weights,
                      MatView y) override;
  void MoeDispatchLayout(ConstMatView x, std::span<const int32_t> expert_ids, int64_t top_k,
                         const MoeSlotTable& table, int32_t rank, int64_t capacity, MatView send,
                         std::span<int32_t> send_counts, std::span<int32_t> pair_rows,
                         std::span<int64_t> expert_load,
                         std::span<const int32_t> tokens_in_use) override;
  void GroupedGatedFfn(ConstMatView x, std::span<const int32_t> counts, int64_t sources,
                       int64_t capacity, std::span<const ExpertFfnWeights> experts,
                       MatView out) override;
  void MoeCombineReduce(ConstMatView combined, std::span<const int32_t> pair_rows,
                        std::span<const int32_t> expert_ids, std::span<const float> gains,
                        int64_t top_k, ConstMatView shared, MatView out) override;
  void LogSoftmax(ConstMatView x, MatView out) override;
  void Sample(ConstMatView logits, std::span<const SamplingParams> params,
              std::span<const uint64_t> draw_index, std::span<int32_t> token_ids,
              std::span<float> logprobs) override;
};

}  // namespace moeserve::cpu

#endif  // MOESERVE_KERNELS_CPU_CPU_OPS_IMPL_H_
