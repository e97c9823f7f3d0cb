// An Ops decorator that times every call by op, for benchmarks: forwards to
// the wrapped implementation and adds the wall time to a per-op total. It
// also counts the multiply-adds and the weight bytes of the GEMM-bound ops
// (Linear, GatedFfn), so a benchmark can set achieved rates against the
// machine's limits.
#ifndef MOESERVE_TOOLS_BENCH_PROFILING_OPS_H_
#define MOESERVE_TOOLS_BENCH_PROFILING_OPS_H_

#include <chrono>
#include <map>
#include <string>

#include "kernels/ops.h"

namespace moeserve {

class ProfilingOps final : public Ops {
 public:
  explicit ProfilingOps(Ops& inner) : inner_(inner) {}

  // Seconds spent per op name since the last Reset().
  const std::map<std::string, double>& seconds() const { return seconds_; }
  double gemm_flops() const { return gemm_flops_; }      // 2 x multiply-adds
  double weight_bytes() const { return weight_bytes_; }  // float32 weights read
  void Reset() {
    seconds_.clear();
    gemm_flops_ = 0;
    weight_bytes_ = 0;
  }

  void Embedding(const Tensor& t, std::span<const int32_t> ids, MatView out) override {
    Timed("Embedding", [&] { inner_.Embedding(t, ids, out); });
  }
  void RmsNorm(ConstMatView x, const Tensor& w, float eps, MatView out) override {
    Timed("RmsNorm", [&] { inner_.RmsNorm(x, w, eps, out); });
  }
  void Linear(ConstMatView x, const Tensor& w, MatView y) override {
    Count(x.rows, w);
    Timed("Linear", [&] { inner_.Linear(x, w, y); });
  }
  void Add(ConstMatView x, MatView y) override {
    Timed("Add", [&] { inner_.Add(x, y); });
  }
  void Rope(MatView x, int64_t heads, std::span<const int32_t> pos, const RopeTable& t) override {
    Timed("Rope", [&] { inner_.Rope(x, heads, pos, t); });
  }
  void CacheWrite(ConstMatView v, const SeqTable& s, const PagedCacheView& c) override {
    Timed("CacheWrite", [&] { inner_.CacheWrite(v, s, c); });
  }
  void MlaAttentionPrefill(ConstMatView q, const Tensor& w, const PagedCacheView& c,
                           const SeqTable& s, std::span<const SeqSlice> h, const MlaShape& sh,
                           MatView o) override {
    Timed("MlaAttentionPrefill", [&] { inner_.MlaAttentionPrefill(q, w, c, s, h, sh, o); });
  }
  void MlaAttentionAbsorbed(ConstMatView q, const Tensor& w, const PagedCacheView& c,
                            const SeqTable& s, const MlaShape& sh, MatView o) override {
    Timed("MlaAttentionAbsorbed", [&] { inner_.MlaAttentionAbsorbed(q, w, c, s, sh, o); });
  }
  void GqaAttention(ConstMatView q, const PagedCacheView& c, const SeqTable& s, const GqaShape& sh,
                    MatView o) override {
    Timed("GqaAttention", [&] { inner_.GqaAttention(q, c, s, sh, o); });
  }
  void RouteTopK(ConstMatView l, const RoutingParams& p, std::span<int32_t> ids,
                 std::span<float> w) override {
    Timed("RouteTopK", [&] { inner_.RouteTopK(l, p, ids, w); });
  }
  void GatedFfn(ConstMatView x, const Tensor& g, const Tensor& u, const Tensor& d,
                MatView out) override {
    Count(x.rows, g);
    Count(x.rows, u);
    Count(x.rows, d);
    Timed("GatedFfn", [&] { inner_.GatedFfn(x, g, u, d, out); });
  }
  void GatherRows(ConstMatView x, std::span<const int32_t> r, MatView out) override {
    Timed("GatherRows", [&] { inner_.GatherRows(x, r, out); });
  }
  void ScatterAddRows(ConstMatView x, std::span<const int32_t> r, std::span<const float> w,
                      MatView y) override {
    Timed("ScatterAddRows", [&] { inner_.ScatterAddRows(x, r, w, y); });
  }
  void MoeDispatchLayout(ConstMatView x, std::span<const int32_t> e, int64_t k,
                         const MoeSlotTable& t, int32_t r, int64_t cap, MatView s,
                         std::span<int32_t> sc, std::span<int32_t> pr,
                         std::span<int64_t> load, std::span<const int32_t> in_use) override {
    Timed("MoeDispatchLayout",
          [&] { inner_.MoeDispatchLayout(x, e, k, t, r, cap, s, sc, pr, load, in_use); });
  }
  // Runs on a CPU stream's thread, after the dispatch: the counts are there.
  void GroupedGatedFfn(ConstMatView x, std::span<const int32_t> counts, int64_t sources,
                       int64_t cap, std::span<const ExpertFfnWeights> w, MatView out) override {
    for (size_t s = 0; s < w.size(); ++s) {
      if (w[s].gate == nullptr) continue;
      int64_t rows = 0;
      for (int64_t r = 0; r < sources; ++r) rows += counts[static_cast<size_t>(r) * w.size() + s];
      Count(rows, *w[s].gate);
      Count(rows, *w[s].up);
      Count(rows, *w[s].down);
    }
    Timed("GatedFfn", [&] { inner_.GroupedGatedFfn(x, counts, sources, cap, w, out); });
  }
  void MoeCombineReduce(ConstMatView c, std::span<const int32_t> pr, std::span<const int32_t> e,
                        std::span<const float> g, int64_t k, ConstMatView sh,
                        MatView out) override {
    Timed("MoeCombineReduce", [&] { inner_.MoeCombineReduce(c, pr, e, g, k, sh, out); });
  }
  void LogSoftmax(ConstMatView x, MatView out) override {
    Timed("LogSoftmax", [&] { inner_.LogSoftmax(x, out); });
  }
  void Sample(ConstMatView l, std::span<const SamplingParams> p, std::span<const uint64_t> d,
              std::span<int32_t> ids, std::span<float> lp) override {
    Timed("Sample", [&] { inner_.Sample(l, p, d, ids, lp); });
  }

 private:
  void Count(int64_t rows, const Tensor& w) {
    gemm_flops_ += 2.0 * static_cast<double>(rows) * static_cast<double>(w.numel());
    weight_bytes_ += static_cast<double>(w.nbytes());
  }
  template <typename F>
  void Timed(const char* name, F&& f) {
    const auto start = std::chrono::steady_clock::now();
    f();
    seconds_[name] +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  Ops& inner_;
  std::map<std::string, double> seconds_;
  double gemm_flops_ = 0;
  double weight_bytes_ = 0;
};

}  // namespace moeserve

#endif  // MOESERVE_TOOLS_BENCH_PROFILING_OPS_H_
