#include "tests/kernels/cuda/staging_ops.h"

#include <gtest/gtest.h>

#include <cstring>

#include "kernels/cuda/device_tensor.h"

namespace moeserve::testing {
namespace {

// A dense device copy of a host view (or an uninitialised one).
struct DeviceView {
  Tensor t;
  explicit DeviceView(ConstMatView v, bool copy = true) {
    t = cuda::AllocateDevice(DType::kF32, {v.rows, v.cols}).value();
    if (!copy) return;
    for (int64_t r = 0; r < v.rows; ++r) {
      EXPECT_TRUE(cuda::CopyToDevice(t.f32() + r * v.cols, v.row(r),
                                     static_cast<size_t>(v.cols) * sizeof(float))
                      .ok());
    }
  }
  MatView view() { return {t.f32(), t.dim(0), t.dim(1), t.dim(1)}; }
  void CopyTo(MatView dst) const {
    for (int64_t r = 0; r < dst.rows; ++r) {
      EXPECT_TRUE(cuda::CopyToHost(dst.row(r), t.f32() + r * dst.cols,
                                   static_cast<size_t>(dst.cols) * sizeof(float))
                      .ok());
    }
  }
};

template <class T>
Tensor UploadSpan(std::span<const T> s) {
  Tensor t = cuda::AllocateDevice(DType::kI32, {static_cast<int64_t>((s.size_bytes() + 3) / 4 + 1)})
                 .value();
  EXPECT_TRUE(cuda::CopyToDevice(t.raw(), s.data(), s.size_bytes()).ok());
  return t;
}

template <class T>
void DownloadSpan(const Tensor& t, std::span<T> s) {
  EXPECT_TRUE(cuda::CopyToHost(s.data(), t.raw(), s.size_bytes()).ok());
}

template <class T>
std::span<T> Span(Tensor& t, size_t n) {
  return {static_cast<T*>(t.raw()), n};
}

}  // namespace

const Tensor& StagingOps::Weight(const Tensor& host) {
  auto it = weights_.find(host.raw());
  if (it != weights_.end()) return it->second.device;
  CachedWeight w;
  w.host = host;
  auto dev = (mode_ == WeightMode::kBf16 && host.rank() == 2) ? cuda::ToDeviceBf16(host)
                                                              : cuda::ToDevice(host);
  EXPECT_TRUE(dev.ok()) << dev.status();
  w.device = *std::move(dev);
  return weights_.emplace(host.raw(), std::move(w)).first->second.device;
}

PagedCacheView StagingOps::Mirror(const PagedCacheView& host) {
  auto it = caches_.find(host.data);
  if (it == caches_.end()) {
    const int64_t bytes = host.num_blocks * host.block_size * host.row_bytes();
    Tensor t = cuda::AllocateDevice(DType::kF32, {CeilDiv(bytes, 4)}).value();
    EXPECT_TRUE(cuda::CopyToDevice(t.raw(), host.data, static_cast<size_t>(bytes)).ok());
    it = caches_.emplace(host.data, std::move(t)).first;
  }
  PagedCacheView device = host;  // same layout, device bytes
  device.data = it->second.raw();
  return device;
}

void StagingOps::Embedding(const Tensor& table, std::span<const int32_t> ids, MatView out) {
  Tensor d_ids = UploadSpan(ids);
  DeviceView d_out(out, false);
  gpu_.Embedding(Weight(table), Span<const int32_t>(d_ids, ids.size()), d_out.view());
  d_out.CopyTo(out);
}

void StagingOps::RmsNorm(ConstMatView x, const Tensor& weight, float eps, MatView out) {
  DeviceView d_x(x);
  gpu_.RmsNorm(d_x.view(), Weight(weight), eps, d_x.view());
  d_x.CopyTo(out);
}

void StagingOps::Linear(ConstMatView x, const Tensor& w, MatView y) {
  DeviceView d_x(x), d_y(y, false);
  gpu_.Linear(d_x.view(), Weight(w), d_y.view());
  d_y.CopyTo(y);
}

void StagingOps::Add(ConstMatView x, MatView y) {
  DeviceView d_x(x), d_y(y);
  gpu_.Add(d_x.view(), d_y.view());
  d_y.CopyTo(y);
}

void StagingOps::Rope(MatView x, int64_t heads_per_token, std::span<const int32_t> positions,
                      const RopeTable& table) {
  DeviceView d_x(x);
  Tensor d_pos = UploadSpan(positions);
  gpu_.Rope(d_x.view(), heads_per_token, Span<const int32_t>(d_pos, positions.size()), table);
  d_x.CopyTo(x);
}

void StagingOps::CacheWrite(ConstMatView values, std::span<const SeqSlice> seqs,
                            const PagedCacheView& cache) {
  DeviceView d_values(values);
  gpu_.CacheWrite(d_values.view(), seqs, Mirror(cache));
  for (const SeqSlice& seq : seqs) {  // keep the host cache the same (the CPU twin's write)
    for (int64_t j = 0; j < seq.num_tokens; ++j) {
      const int64_t p = seq.context_len - seq.num_tokens + j;
      QuantizeKvRow(cache.layout(), values.row(seq.token_begin + j),
                    cache.token(seq.block_table[static_cast<size_t>(p / cache.block_size)],
                                p % cache.block_size));
    }
  }
  EXPECT_TRUE(gpu_.Synchronize().ok());  // d_values is freed on return
}

void StagingOps::MlaAttentionPrefill(ConstMatView q, const Tensor& wkv_b,
                                     const PagedCacheView& cache, std::span<const SeqSlice> seqs,
                                     const MlaShape& shape, MatView out) {
  DeviceView d_q(q), d_out(out);  // rows of other sequences keep their values
  gpu_.MlaAttentionPrefill(d_q.view(), Weight(wkv_b), Mirror(cache), seqs, shape, d_out.view());
  d_out.CopyTo(out);
}

void StagingOps::MlaAttentionAbsorbed(ConstMatView q, const Tensor& wkv_b,
                                      const PagedCacheView& cache, std::span<const SeqSlice> seqs,
                                      const MlaShape& shape, MatView out) {
  DeviceView d_q(q), d_out(out);
  gpu_.MlaAttentionAbsorbed(d_q.view(), Weight(wkv_b), Mirror(cache), seqs, shape, d_out.view());
  d_out.CopyTo(out);
}

void StagingOps::GqaAttention(ConstMatView q, const PagedCacheView& cache,
                              std::span<const SeqSlice> seqs, const GqaShape& shape, MatView out) {
  DeviceView d_q(q), d_out(out);
  gpu_.GqaAttention(d_q.view(), Mirror(cache), seqs, shape, d_out.view());
  d_out.CopyTo(out);
}

void StagingOps::RouteTopK(ConstMatView logits, const RoutingParams& params,
                           std::span<int32_t> expert_ids, std::span<float> weights) {
  DeviceView d_logits(logits);
  RoutingParams p = params;
  Tensor d_bias;
  if (params.correction_bias != nullptr) {
    d_bias = UploadSpan(
        std::span<const float>(params.correction_bias, static_cast<size_t>(params.num_experts)));
    p.correction_bias = static_cast<const float*>(d_bias.raw());
  }
  Tensor d_ids = UploadSpan(std::span<const int32_t>(expert_ids));
  Tensor d_w = UploadSpan(std::span<const float>(weights));
  gpu_.RouteTopK(d_logits.view(), p, Span<int32_t>(d_ids, expert_ids.size()),
                 Span<float>(d_w, weights.size()));
  DownloadSpan(d_ids, expert_ids);
  DownloadSpan(d_w, weights);
}

void StagingOps::GatedFfn(ConstMatView x, const Tensor& gate, const Tensor& up, const Tensor& down,
                          MatView out) {
  DeviceView d_x(x), d_out(out, false);
  gpu_.GatedFfn(d_x.view(), Weight(gate), Weight(up), Weight(down), d_out.view());
  d_out.CopyTo(out);
}

void StagingOps::GatherRows(ConstMatView x, std::span<const int32_t> rows, MatView out) {
  DeviceView d_x(x), d_out(out, false);
  Tensor d_rows = UploadSpan(rows);
  gpu_.GatherRows(d_x.view(), Span<const int32_t>(d_rows, rows.size()), d_out.view());
  d_out.CopyTo(out);
}

void StagingOps::ScatterAddRows(ConstMatView x, std::span<const int32_t> rows,
                                std::span<const float> weights, MatView y) {
  DeviceView d_x(x), d_y(y);
  Tensor d_rows = UploadSpan(rows), d_w = UploadSpan(weights);
  gpu_.ScatterAddRows(d_x.view(), Span<const int32_t>(d_rows, rows.size()),
                      Span<const float>(d_w, weights.size()), d_y.view());
  d_y.CopyTo(y);
}

void StagingOps::LogSoftmax(ConstMatView x, MatView out) {
  DeviceView d_x(x);
  gpu_.LogSoftmax(d_x.view(), d_x.view());
  d_x.CopyTo(out);
}

void StagingOps::Sample(ConstMatView logits, std::span<const SamplingParams> params,
                        std::span<const uint64_t> draw_index, std::span<int32_t> token_ids,
                        std::span<float> logprobs) {
  DeviceView d_logits(logits);
  Tensor d_draws = UploadSpan(draw_index);
  Tensor d_ids = UploadSpan(std::span<const int32_t>(token_ids));
  Tensor d_lp = UploadSpan(std::span<const float>(logprobs));
  gpu_.Sample(d_logits.view(), params, Span<const uint64_t>(d_draws, draw_index.size()),
              Span<int32_t>(d_ids, token_ids.size()), Span<float>(d_lp, logprobs.size()));
  DownloadSpan(d_ids, token_ids);
  DownloadSpan(d_lp, logprobs);
}

}  // namespace moeserve::testing
