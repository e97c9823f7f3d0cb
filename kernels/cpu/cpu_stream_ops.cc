// The CPU op set on a CPU stream: each op is queued as one piece of work and
// runs on the stream's thread, as a kernel launch runs on a GPU. Descriptors
// (rope tables, routing and sampling parameters, shapes, a sequence table's
// pointers and bounds, weight tensors) are copied when the op is queued;
// views, spans of numbers and a sequence table's arrays are backend memory,
// read when the op runs. The prefill form's host slices are dropped: the
// CPU op set reads the table, so a captured step replays what the arrays
// hold then, exactly as a CUDA graph does.
#include <memory>
#include <utility>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_ops_impl.h"

namespace moeserve {
namespace {

class CpuStreamOps final : public Ops {
 public:
  CpuStreamOps(Stream& stream, std::shared_ptr<Ops> inner)
      : stream_(stream), ops_(inner ? std::move(inner) : std::make_shared<cpu::CpuOps>()) {}

  void Embedding(const Tensor& table, std::span<const int32_t> ids, MatView out) override {
    Queue([=](Ops& o) { o.Embedding(table, ids, out); });
  }
  void RmsNorm(ConstMatView x, const Tensor& weight, float eps, MatView out) override {
    Queue([=](Ops& o) { o.RmsNorm(x, weight, eps, out); });
  }
  void Linear(ConstMatView x, const Tensor& w, MatView y) override {
    Queue([=](Ops& o) { o.Linear(x, w, y); });
  }
  void Add(ConstMatView x, MatView y) override {
    Queue([=](Ops& o) { o.Add(x, y); });
  }
  void Rope(MatView x, int64_t heads_per_token, std::span<const int32_t> positions,
            const RopeTable& table) override {
    auto t = std::make_shared<RopeTable>(table);
    Queue([=](Ops& o) { o.Rope(x, heads_per_token, positions, *t); });
  }
  void CacheWrite(ConstMatView values, const SeqTable& seqs, const PagedCacheView& cache) override {
    Queue([=](Ops& o) { o.CacheWrite(values, seqs, cache); });
  }
  void MlaAttentionPrefill(ConstMatView q, const Tensor& wkv_b, const PagedCacheView& cache,
                           const SeqTable& seqs, std::span<const SeqSlice> /*host*/,
                           const MlaShape& shape, MatView out) override {
    Queue([=](Ops& o) { o.MlaAttentionPrefill(q, wkv_b, cache, seqs, {}, shape, out); });
  }
  void MlaAttentionAbsorbed(ConstMatView q, const Tensor& wkv_b, const PagedCacheView& cache,
                            const SeqTable& seqs, const MlaShape& shape, MatView out) override {
    Queue([=](Ops& o) { o.MlaAttentionAbsorbed(q, wkv_b, cache, seqs, shape, out); });
  }
  void GqaAttention(ConstMatView q, const PagedCacheView& cache, const SeqTable& seqs,
                    const GqaShape& shape, MatView out) override {
    Queue([=](Ops& o) { o.GqaAttention(q, cache, seqs, shape, out); });
  }
  void RouteTopK(ConstMatView logits, const RoutingParams& params, std::span<int32_t> expert_ids,
                 std::span<float> weights) override {
    Queue([=](Ops& o) { o.RouteTopK(logits, params, expert_ids, weights); });
  }
  void GatedFfn(ConstMatView x, const Tensor& gate, const Tensor& up, const Tensor& down,
                MatView out) override {
    Queue([=](Ops& o) { o.GatedFfn(x, gate, up, down, out); });
  }
  void GatherRows(ConstMatView x, std::span<const int32_t> rows, MatView out) override {
    Queue([=](Ops& o) { o.GatherRows(x, rows, out); });
  }
  void ScatterAddRows(ConstMatView x, std::span<const int32_t> rows, std::span<const float> weights,
                      MatView y) override {
    Queue([=](Ops& o) { o.ScatterAddRows(x, rows, weights, y); });
  }
  void MoeDispatchLayout(ConstMatView x, std::span<const int32_t> expert_ids, int64_t top_k,
                         const MoeSlotTable& table, int32_t rank, int64_t capacity, MatView send,
                         std::span<int32_t> send_counts, std::span<int32_t> pair_rows,
                         std::span<int64_t> expert_load,
                         std::span<const int32_t> tokens_in_use) override {
    Queue([=](Ops& o) {
      o.MoeDispatchLayout(x, expert_ids, top_k, table, rank, capacity, send, send_counts, pair_rows,
                          expert_load, tokens_in_use);
    });
  }
  void GroupedGatedFfn(ConstMatView x, std::span<const int32_t> counts, int64_t sources,
                       int64_t capacity, std::span<const ExpertFfnWeights> experts,
                       MatView out) override {
    auto w = std::make_shared<std::vector<ExpertFfnWeights>>(experts.begin(), experts.end());
    Queue([=](Ops& o) { o.GroupedGatedFfn(x, counts, sources, capacity, *w, out); });
  }
  void MoeCombineReduce(ConstMatView combined, std::span<const int32_t> pair_rows,
                        std::span<const int32_t> expert_ids, std::span<const float> gains,
                        int64_t top_k, ConstMatView shared, MatView out) override {
    Queue([=](Ops& o) {
      o.MoeCombineReduce(combined, pair_rows, expert_ids, gains, top_k, shared, out);
    });
  }
  void LogSoftmax(ConstMatView x, MatView out) override {
    Queue([=](Ops& o) { o.LogSoftmax(x, out); });
  }
  void Sample(ConstMatView logits, std::span<const SamplingParams> params,
              std::span<const uint64_t> draw_index, std::span<int32_t> token_ids,
              std::span<float> logprobs) override {
    auto p = std::make_shared<std::vector<SamplingParams>>(params.begin(), params.end());
    Queue([=](Ops& o) { o.Sample(logits, *p, draw_index, token_ids, logprobs); });
  }

 private:
  template <typename Fn>
  void Queue(Fn fn) {
    stream_.HostFunction([ops = ops_, fn = std::move(fn)] {
      fn(*ops);
      return absl::OkStatus();
    });
  }

  Stream& stream_;
  // Shared with the queued work, which may outlive this object inside a
  // captured graph.
  std::shared_ptr<Ops> ops_;
};

}  // namespace

std::unique_ptr<Ops> CreateCpuStreamOps(Stream& stream, std::shared_ptr<Ops> inner) {
  return std::make_unique<CpuStreamOps>(stream, std::move(inner));
}

}  // namespace moeserve
