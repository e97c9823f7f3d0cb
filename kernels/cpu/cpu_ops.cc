// Dense and elementwise ops of the CPU backend, RoPE and cache writes, plus
// the contract checks shared by every file of the backend.
//
// Numerics: float32 storage and arithmetic like the PyTorch references
// (DeepSeek-V3 inference/model.py, Hugging Face Qwen3-MoE). Reductions whose
// rounding would otherwise depend on the summation order (RmsNorm's sum of
// squares, LogSoftmax's sum of exponentials) accumulate in double and round
// once, so they are at least as accurate as torch's pairwise float sums.
#include "kernels/cpu/cpu_ops.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_ops_impl.h"
#include "kernels/cpu/gemm.h"

namespace moeserve {
namespace cpu {

void Require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "moeserve cpu ops: contract violated: %s\n", what);
  std::abort();
}

ConstMatView WeightMat(const Tensor& w, int64_t rows, int64_t cols, const char* name) {
  Require(!w.empty() && w.dtype() == DType::kF32, name);
  Require(w.rank() == 2 && w.dim(0) == rows && w.dim(1) == cols, name);
  return w.mat();
}

void RequireView(ConstMatView v, const char* name) {
  Require(v.rows >= 0 && v.cols >= 0, name);
  Require(v.rows <= 1 || v.stride >= v.cols, name);
  Require(v.rows == 0 || v.cols == 0 || v.data != nullptr, name);
}

void RequireSeq(const SeqSlice& seq, int64_t batch_rows, const PagedCacheView& cache) {
  Require(
      seq.token_begin >= 0 && seq.num_tokens >= 0 && seq.token_begin + seq.num_tokens <= batch_rows,
      "sequence rows outside the batch");
  Require(seq.num_tokens <= seq.context_len, "sequence has more new tokens than context");
  Require(cache.block_size > 0, "cache block_size must be positive");
  const int64_t blocks = CeilDiv(seq.context_len, cache.block_size);
  Require(static_cast<int64_t>(seq.block_table.size()) >= blocks,
          "block table shorter than the context");
  for (int64_t b = 0; b < blocks; ++b) {
    const int32_t id = seq.block_table[static_cast<size_t>(b)];
    Require(id >= 0 && id < cache.num_blocks, "block id outside the cache");
  }
}

std::vector<SeqSlice> ReadSeqs(const SeqTable& table, int64_t batch_rows,
                               const PagedCacheView& cache) {
  Require(table.num_seqs >= 0 && table.max_blocks >= 0, "sequence table sizes must be >= 0");
  Require(table.num_seqs == 0 || (table.token_begin != nullptr && table.num_tokens != nullptr &&
                                  table.context_len != nullptr),
          "sequence table arrays missing");
  Require(cache.block_size > 0, "cache block_size must be positive");
  Require(table.max_context <= table.max_blocks * cache.block_size,
          "sequence table: max_context beyond what max_blocks cover");
  std::vector<SeqSlice> seqs;
  seqs.reserve(static_cast<size_t>(table.num_seqs));
  for (int64_t i = 0; i < table.num_seqs; ++i) {
    SeqSlice s;
    s.token_begin = table.token_begin[i];
    s.num_tokens = table.num_tokens[i];
    s.context_len = table.context_len[i];
    Require(s.num_tokens >= 0, "sequence with a negative token count");
    if (s.num_tokens == 0) continue;
    Require(s.num_tokens <= table.max_tokens && s.context_len <= table.max_context,
            "sequence beyond the table's bounds (max_tokens, max_context)");
    s.block_table = std::span<const int32_t>(table.block_tables + i * table.max_blocks,
                                             static_cast<size_t>(table.max_blocks));
    RequireSeq(s, batch_rows, cache);
    seqs.push_back(s);
  }
  return seqs;
}

void CpuOps::Embedding(const Tensor& table, std::span<const int32_t> ids, MatView out) {
  Require(table.dtype() == DType::kF32 && table.rank() == 2, "embedding table must be F32 2-D");
  const int64_t vocab = table.dim(0), hidden = table.dim(1);
  RequireView(out, "embedding out");
  Require(out.rows == static_cast<int64_t>(ids.size()) && out.cols == hidden,
          "embedding out must be [ids, hidden]");
  for (int64_t t = 0; t < out.rows; ++t) {
    const int32_t id = ids[static_cast<size_t>(t)];
    Require(id >= 0 && id < vocab, "token id outside the vocabulary");
    std::memcpy(out.row(t), table.f32() + id * hidden, static_cast<size_t>(hidden) * sizeof(float));
  }
}

// Matches torch: var = mean(x^2); x * rsqrt(var + eps) * weight, in float32,
// except that the sum of squares is accumulated in double (see file comment).
void CpuOps::RmsNorm(ConstMatView x, const Tensor& weight, float eps, MatView out) {
  RequireView(x, "rmsnorm x");
  RequireView(out, "rmsnorm out");
  Require(out.rows == x.rows && out.cols == x.cols, "rmsnorm out shape differs from x");
  Require(weight.dtype() == DType::kF32 && weight.numel() == x.cols,
          "rmsnorm weight must be F32 [x.cols]");
  const float* w = weight.f32();
  for (int64_t r = 0; r < x.rows; ++r) {
    const float* in = x.row(r);
    double sum_sq = 0.0;
    for (int64_t c = 0; c < x.cols; ++c) sum_sq += static_cast<double>(in[c]) * in[c];
    const float mean =
        x.cols == 0 ? 0.0f : static_cast<float>(sum_sq / static_cast<double>(x.cols));
    const float inv_rms = 1.0f / std::sqrt(mean + eps);
    float* o = out.row(r);  // may equal `in`: each element is read before it is written
    for (int64_t c = 0; c < x.cols; ++c) o[c] = (in[c] * inv_rms) * w[c];
  }
}

void CpuOps::Linear(ConstMatView x, const Tensor& w, MatView y) {
  GemmNT(x, WeightMat(w, y.cols, x.cols, "linear weight must be F32 [y.cols, x.cols]"), y);
}

void CpuOps::Add(ConstMatView x, MatView y) {
  RequireView(x, "add x");
  RequireView(y, "add y");
  Require(x.rows == y.rows && x.cols == y.cols, "add: shapes differ");
  for (int64_t r = 0; r < y.rows; ++r) {
    const float* a = x.row(r);
    float* b = y.row(r);
    for (int64_t c = 0; c < y.cols; ++c) b[c] += a[c];
  }
}

// angle = float(position) * inv_freq in float32 (torch.outer of an integer
// arange with float32 frequencies); cos/sin of that float angle are rounded
// once from double, then scaled by the YaRN attention factor.
void CpuOps::Rope(MatView x, int64_t heads_per_token, std::span<const int32_t> positions,
                  const RopeTable& table) {
  RequireView(x, "rope x");
  const int64_t half = static_cast<int64_t>(table.inv_freq.size());
  Require(x.cols == 2 * half, "rope: x.cols != rotary_dim");
  Require(heads_per_token > 0 && x.rows == static_cast<int64_t>(positions.size()) * heads_per_token,
          "rope: x.rows != tokens * heads_per_token");
  std::vector<float> cos(static_cast<size_t>(half)), sin(static_cast<size_t>(half));
  for (size_t t = 0; t < positions.size(); ++t) {
    const float pos = static_cast<float>(positions[t]);
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(pos * table.inv_freq[static_cast<size_t>(i)]);
      cos[static_cast<size_t>(i)] = static_cast<float>(std::cos(angle)) * table.attention_factor;
      sin[static_cast<size_t>(i)] = static_cast<float>(std::sin(angle)) * table.attention_factor;
    }
    for (int64_t h = 0; h < heads_per_token; ++h) {
      float* v = x.row(static_cast<int64_t>(t) * heads_per_token + h);
      for (int64_t i = 0; i < half; ++i) {
        const float c = cos[static_cast<size_t>(i)], s = sin[static_cast<size_t>(i)];
        // (a, b) are the real and imaginary parts of one complex number.
        float& a = table.style == RopeStyle::kInterleaved ? v[2 * i] : v[i];
        float& b = table.style == RopeStyle::kInterleaved ? v[2 * i + 1] : v[i + half];
        const float ra = a * c - b * s;
        const float rb = a * s + b * c;
        a = ra;
        b = rb;
      }
    }
  }
}

void CpuOps::CacheWrite(ConstMatView values, const SeqTable& seqs, const PagedCacheView& cache) {
  RequireView(values, "cache write values");
  Require(values.cols == cache.width, "cache write: values.cols != cache.width");
  Require(seqs.rows == values.rows && (seqs.rows == 0 || seqs.slots != nullptr),
          "cache write: the table's slots must cover the values' rows");
  const KvRowLayout layout = cache.layout();
  Require(layout.valid(), "cache write: invalid cache row layout");
  Require(cache.block_size > 0, "cache block_size must be positive");
  for (int64_t r = 0; r < values.rows; ++r) {
    const int32_t slot = seqs.slots[r];
    if (slot < 0) continue;
    Require(slot < cache.num_blocks * cache.block_size, "cache write: slot outside the cache");
    QuantizeKvRow(layout, values.row(r),
                  cache.token(static_cast<int32_t>(slot / cache.block_size), slot % cache.block_size));
  }
}

void CpuOps::GatedFfn(ConstMatView x, const Tensor& gate, const Tensor& up, const Tensor& down,
                      MatView out) {
  Require(gate.rank() == 2, "ffn gate must be 2-D");
  const int64_t inter = gate.dim(0), hidden = x.cols;
  Require(out.rows == x.rows && out.cols == hidden, "ffn out must be [T, hidden]");
  Tensor g = Tensor::Empty(DType::kF32, {x.rows, inter});
  Tensor u = Tensor::Empty(DType::kF32, {x.rows, inter});
  GemmNT(x, WeightMat(gate, inter, hidden, "ffn gate must be F32 [inter, hidden]"), g.mat());
  GemmNT(x, WeightMat(up, inter, hidden, "ffn up must be F32 [inter, hidden]"), u.mat());
  float* gp = g.f32();
  const float* up_p = u.f32();
  for (int64_t i = 0; i < g.numel(); ++i) {
    const float a = gp[i];
    gp[i] = a / (1.0f + std::exp(-a)) * up_p[i];  // silu(gate) * up
  }
  GemmNT(g.mat(), WeightMat(down, hidden, inter, "ffn down must be F32 [hidden, inter]"), out);
}

void CpuOps::GatherRows(ConstMatView x, std::span<const int32_t> rows, MatView out) {
  RequireView(x, "gather x");
  RequireView(out, "gather out");
  Require(out.rows == static_cast<int64_t>(rows.size()) && out.cols == x.cols,
          "gather out must be [rows, x.cols]");
  for (int64_t i = 0; i < out.rows; ++i) {
    const int32_t src = rows[static_cast<size_t>(i)];
    Require(src >= 0 && src < x.rows, "gather row outside x");
    std::memcpy(out.row(i), x.row(src), static_cast<size_t>(x.cols) * sizeof(float));
  }
}

void CpuOps::ScatterAddRows(ConstMatView x, std::span<const int32_t> rows,
                            std::span<const float> weights, MatView y) {
  RequireView(x, "scatter x");
  RequireView(y, "scatter y");
  Require(x.rows == static_cast<int64_t>(rows.size()) && rows.size() == weights.size() &&
              x.cols == y.cols,
          "scatter: x, rows, weights and y disagree");
  for (int64_t i = 0; i < x.rows; ++i) {
    const int32_t dst = rows[static_cast<size_t>(i)];
    Require(dst >= 0 && dst < y.rows, "scatter row outside y");
    const float w = weights[static_cast<size_t>(i)];
    const float* src = x.row(i);
    float* d = y.row(dst);
    for (int64_t c = 0; c < x.cols; ++c) d[c] += w * src[c];
  }
}

// out = x - max - log(sum(exp(x - max))), the sum accumulated in double and
// the result rounded once to float.
void CpuOps::LogSoftmax(ConstMatView x, MatView out) {
  RequireView(x, "log_softmax x");
  RequireView(out, "log_softmax out");
  Require(out.rows == x.rows && out.cols == x.cols, "log_softmax out shape differs from x");
  for (int64_t r = 0; r < x.rows; ++r) {
    const float* in = x.row(r);
    float max = -INFINITY;
    for (int64_t c = 0; c < x.cols; ++c) max = std::fmax(max, in[c]);
    double sum = 0.0;
    for (int64_t c = 0; c < x.cols; ++c) sum += std::exp(static_cast<double>(in[c]) - max);
    const double shift = static_cast<double>(max) + std::log(sum);
    float* o = out.row(r);  // may equal `in`: all reads of the row happened above
    for (int64_t c = 0; c < x.cols; ++c) o[c] = static_cast<float>(in[c] - shift);
  }
}

}  // namespace cpu

std::unique_ptr<Ops> CreateCpuOps() { return std::make_unique<cpu::CpuOps>(); }

}  // namespace moeserve
