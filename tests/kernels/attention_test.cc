// Paged attention: MLA (prefill and absorbed forms) and GQA against naive
// double-precision references, on a ragged batch whose sequences have
// different context lengths and non-contiguous block tables. Cache slots
// outside every context hold NaN, so reading them would poison the output.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace moeserve {
namespace {

using testing::Compare;
using testing::Deviation;
using testing::RandomVector;
using testing::TestCache;

constexpr float kSentinel = 7.0f;  // the prefill form leaves rows of no sequence as they are

// Three sequences and one batch row (3) that belongs to none:
//   seq 0: rows 0..2, positions 4..6 of 7, blocks {5, 2} (chunked prefill)
//   seq 1: row 4, position 5 of 6, blocks {1, 7} (decode)
//   seq 2: rows 5..9, positions 0..4 of 5, blocks {3, 0} (fresh prefill)
struct RaggedBatch {
  int64_t rows = 10;
  int64_t block_size = 4;
  int64_t num_blocks = 8;
  std::vector<std::vector<int32_t>> tables = {{5, 2}, {1, 7}, {3, 0}};
  std::vector<SeqSlice> seqs = {{0, 3, 7, tables[0]}, {4, 1, 6, tables[1]}, {5, 5, 5, tables[2]}};
};

// A single sequence long enough that the score matrix is split into two
// query tiles (tile = 2^24 / 4200 = 3994 tokens).
struct LongBatch {
  int64_t rows = 4200;
  int64_t block_size = 64;
  int64_t num_blocks = 70;
  std::vector<std::vector<int32_t>> tables;
  std::vector<SeqSlice> seqs;
  LongBatch() {
    std::vector<int32_t> t(66);
    for (int32_t b = 0; b < 66; ++b) t[static_cast<size_t>(b)] = (b * 17) % 70;  // scattered blocks
    tables = {t};
    seqs = {{0, 4200, 4200, tables[0]}};
  }
};

// Fills every context row of every sequence with random values.
void FillContexts(TestCache& cache, const std::vector<std::vector<int32_t>>& tables,
                  const std::vector<SeqSlice>& seqs, uint32_t seed) {
  for (size_t s = 0; s < seqs.size(); ++s) {
    const std::vector<float> rows =
        RandomVector(static_cast<size_t>(seqs[s].context_len * cache.view.width), seed + s);
    for (int64_t p = 0; p < seqs[s].context_len; ++p) {
      std::copy_n(rows.data() + p * cache.view.width, cache.view.width, cache.Row(tables[s], p));
    }
  }
}

// Softmax-weighted sum over positions [0, p] of `values` (row t: `vd` doubles).
void AttendNaive(const std::vector<double>& scores, const std::vector<double>& values, int64_t vd,
                 double* out) {
  double max = -INFINITY, sum = 0;
  for (double s : scores) max = std::max(max, s);
  for (double s : scores) sum += std::exp(s - max);
  for (int64_t d = 0; d < vd; ++d) out[d] = 0;
  for (size_t t = 0; t < scores.size(); ++t) {
    const double w = std::exp(scores[t] - max) / sum;
    for (int64_t d = 0; d < vd; ++d) out[d] += w * values[t * vd + d];
  }
}

// MLA written out per head: decompress every context row with wkv_b, then
// causal softmax attention, all in double. Rows of no sequence stay 0.
std::vector<double> NaiveMla(const std::vector<float>& q, const std::vector<float>& wkv_b,
                             TestCache& cache, const std::vector<std::vector<int32_t>>& tables,
                             const std::vector<SeqSlice>& seqs, int64_t rows,
                             const Ops::MlaShape& sh) {
  const int64_t nope = sh.qk_nope_head_dim, rope = sh.qk_rope_head_dim, vd = sh.v_head_dim;
  const int64_t lora = sh.kv_lora_rank, qk = nope + rope;
  std::vector<double> out(static_cast<size_t>(rows * sh.heads * vd), 0.0);
  for (size_t s = 0; s < seqs.size(); ++s) {
    const SeqSlice& seq = seqs[s];
    for (int64_t h = 0; h < sh.heads; ++h) {
      std::vector<double> k(seq.context_len * qk), v(seq.context_len * vd);
      for (int64_t t = 0; t < seq.context_len; ++t) {
        const float* row = cache.Row(tables[s], t);
        for (int64_t d = 0; d < nope + vd; ++d) {
          double acc = 0;
          for (int64_t c = 0; c < lora; ++c)
            acc += wkv_b[((h * (nope + vd)) + d) * lora + c] * double{row[c]};
          (d < nope ? k[t * qk + d] : v[t * vd + d - nope]) = acc;
        }
        for (int64_t d = 0; d < rope; ++d) k[t * qk + nope + d] = row[lora + d];
      }
      for (int64_t j = 0; j < seq.num_tokens; ++j) {
        const int64_t r = seq.token_begin + j, pos = seq.context_len - seq.num_tokens + j;
        const float* qh = q.data() + r * sh.heads * qk + h * qk;
        std::vector<double> scores(pos + 1);
        for (int64_t t = 0; t <= pos; ++t) {
          double dot = 0;
          for (int64_t d = 0; d < qk; ++d) dot += qh[d] * k[t * qk + d];
          scores[t] = dot * sh.softmax_scale;
        }
        AttendNaive(scores, v, vd, out.data() + (r * sh.heads + h) * vd);
      }
    }
  }
  return out;
}

class MlaTest : public ::testing::Test {
 protected:
  // Runs one MLA form on a random problem; the cache and inputs depend only
  // on the batch, so both forms see identical data.
  template <typename Batch>
  std::vector<float> Run(const Batch& b, bool absorbed) {
    TestCache cache(b.num_blocks, b.block_size, shape_.kv_lora_rank + shape_.qk_rope_head_dim);
    FillContexts(cache, b.tables, b.seqs, 100);
    const int64_t qk = shape_.qk_nope_head_dim + shape_.qk_rope_head_dim;
    Tensor q = Tensor::FromF32({b.rows, shape_.heads * qk}, Q(b.rows));
    Tensor w = Tensor::FromF32({WkvRows(), shape_.kv_lora_rank}, Wkv());
    Tensor out = Tensor::Empty(DType::kF32, {b.rows, shape_.heads * shape_.v_head_dim});
    std::fill_n(out.f32(), out.numel(), kSentinel);
    if (absorbed) {
      ops_->MlaAttentionAbsorbed(q.mat(), w, cache.view, HostSeqTable::Build(b.seqs, b.rows, b.block_size).View(), shape_, out.mat());
    } else {
      ops_->MlaAttentionPrefill(q.mat(), w, cache.view, HostSeqTable::Build(b.seqs, b.rows, b.block_size).View(), b.seqs, shape_,
                                 out.mat());
    }
    return std::vector<float>(out.f32(), out.f32() + out.numel());
  }
  template <typename Batch>
  std::vector<double> Reference(const Batch& b) {
    TestCache cache(b.num_blocks, b.block_size, shape_.kv_lora_rank + shape_.qk_rope_head_dim);
    FillContexts(cache, b.tables, b.seqs, 100);
    return NaiveMla(Q(b.rows), Wkv(), cache, b.tables, b.seqs, b.rows, shape_);
  }
  std::vector<float> Q(int64_t rows) {
    const int64_t qk = shape_.qk_nope_head_dim + shape_.qk_rope_head_dim;
    return RandomVector(static_cast<size_t>(rows * shape_.heads * qk), 1, 2.0f);
  }
  int64_t WkvRows() const { return shape_.heads * (shape_.qk_nope_head_dim + shape_.v_head_dim); }
  std::vector<float> Wkv() {
    return RandomVector(static_cast<size_t>(WkvRows() * shape_.kv_lora_rank), 2, 0.5f);
  }

  std::unique_ptr<Ops> ops_ = CreateCpuOps();
  Ops::MlaShape shape_{/*heads=*/3,           /*nope=*/8, /*rope=*/4, /*v=*/6,
                       /*kv_lora_rank=*/16,
                       /*softmax_scale=*/0.5f};
};

// Rows of the ragged batch that belong to no sequence: the prefill form
// leaves them as they are; the absorbed form and GQA write zeros (so that a
// padded step stays finite).
void ExpectUntouchedGapRow(const std::vector<float>& out, int64_t width) {
  for (int64_t c = 0; c < width; ++c) EXPECT_EQ(out[3 * width + c], kSentinel);
}
void ExpectZeroGapRow(const std::vector<float>& out, int64_t width) {
  for (int64_t c = 0; c < width; ++c) EXPECT_EQ(out[3 * width + c], 0.0f);
}

TEST_F(MlaTest, PrefillFormMatchesNaive) {
  const RaggedBatch b;
  std::vector<float> got = Run(b, /*absorbed=*/false);
  std::vector<double> want = Reference(b);
  ExpectUntouchedGapRow(got, 18);
  for (int64_t c = 0; c < 18; ++c) got[3 * 18 + c] = 0;  // the reference leaves it 0
  const Deviation d = Compare(got, want);
  // Float32 products with inner sums of <= 16 terms and softmax over <= 7
  // positions: errors of a few ulps of the largest output.
  EXPECT_LE(d.max_abs_diff, 1e-5 * d.max_abs_ref) << d.max_abs_ref;
}

TEST_F(MlaTest, AbsorbedFormMatchesNaive) {
  const RaggedBatch b;
  std::vector<float> got = Run(b, /*absorbed=*/true);
  std::vector<double> want = Reference(b);
  ExpectZeroGapRow(got, 18);
  const Deviation d = Compare(got, want);
  EXPECT_LE(d.max_abs_diff, 1e-5 * d.max_abs_ref) << d.max_abs_ref;  // as above
}

TEST_F(MlaTest, FormsAgree) {
  const RaggedBatch b;
  std::vector<float> prefill = Run(b, false), absorbed = Run(b, true);
  ExpectUntouchedGapRow(prefill, 18);
  ExpectZeroGapRow(absorbed, 18);
  for (int64_t c = 0; c < 18; ++c) prefill[3 * 18 + c] = 0;
  const Deviation d = Compare(absorbed, std::vector<double>(prefill.begin(), prefill.end()));
  // Same function, different association of float32 products: ~1e-6 relative.
  EXPECT_LE(d.max_abs_diff, 1e-5 * d.max_abs_ref);
}

TEST_F(MlaTest, LongContextSplitIntoQueryTiles) {
  shape_ = {1, 4, 2, 4, 8, 0.5f};
  const LongBatch b;
  const std::vector<float> prefill = Run(b, false), absorbed = Run(b, true);
  const std::vector<double> want = Reference(b);
  const Deviation dp = Compare(prefill, want), da = Compare(absorbed, want);
  // Float32 sums over up to 4200 positions of convex weights times values:
  // observed ~2e-7 relative, 1e-5 leaves room for other BLAS kernels.
  EXPECT_LE(dp.max_abs_diff, 1e-5 * dp.max_abs_ref);
  EXPECT_LE(da.max_abs_diff, 1e-5 * da.max_abs_ref);
}

// GQA written out per query head, in double. Rows of no sequence stay 0.
std::vector<double> NaiveGqa(const std::vector<float>& q, TestCache& cache,
                             const std::vector<std::vector<int32_t>>& tables,
                             const std::vector<SeqSlice>& seqs, int64_t rows,
                             const Ops::GqaShape& sh) {
  const int64_t hd = sh.head_dim, group = sh.q_heads / sh.kv_heads;
  std::vector<double> out(static_cast<size_t>(rows * sh.q_heads * hd), 0.0);
  for (size_t s = 0; s < seqs.size(); ++s) {
    const SeqSlice& seq = seqs[s];
    for (int64_t j = 0; j < seq.num_tokens; ++j) {
      const int64_t r = seq.token_begin + j, pos = seq.context_len - seq.num_tokens + j;
      for (int64_t h = 0; h < sh.q_heads; ++h) {
        const int64_t kvh = h / group;
        std::vector<double> scores(pos + 1), v((pos + 1) * hd);
        for (int64_t t = 0; t <= pos; ++t) {
          const float* row = cache.Row(tables[s], t);
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d)
            dot += double{q[(r * sh.q_heads + h) * hd + d]} * row[kvh * hd + d];
          scores[t] = dot * sh.softmax_scale;
          for (int64_t d = 0; d < hd; ++d) v[t * hd + d] = row[(sh.kv_heads + kvh) * hd + d];
        }
        AttendNaive(scores, v, hd, out.data() + (r * sh.q_heads + h) * hd);
      }
    }
  }
  return out;
}

template <typename Batch>
void CheckGqa(const Batch& b, const Ops::GqaShape& shape, double rel_tol) {
  TestCache cache(b.num_blocks, b.block_size, 2 * shape.kv_heads * shape.head_dim);
  FillContexts(cache, b.tables, b.seqs, 200);
  const int64_t width = shape.q_heads * shape.head_dim;
  const std::vector<float> qv = RandomVector(static_cast<size_t>(b.rows * width), 3, 2.0f);
  Tensor q = Tensor::FromF32({b.rows, width}, qv);
  Tensor out = Tensor::Empty(DType::kF32, {b.rows, width});
  std::fill_n(out.f32(), out.numel(), kSentinel);
  CreateCpuOps()->GqaAttention(q.mat(), cache.view, HostSeqTable::Build(b.seqs, b.rows, b.block_size).View(), shape, out.mat());
  std::vector<float> got(out.f32(), out.f32() + out.numel());
  const std::vector<double> want = NaiveGqa(qv, cache, b.tables, b.seqs, b.rows, shape);
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] == kSentinel) got[i] = 0;  // the gap row; checked below for the ragged batch
  }
  const Deviation d = Compare(got, want);
  EXPECT_LE(d.max_abs_diff, rel_tol * d.max_abs_ref) << d.max_abs_ref;
}

TEST(GqaTest, MatchesNaiveOnRaggedBatch) {
  const RaggedBatch b;
  const Ops::GqaShape shape{/*q_heads=*/4, /*kv_heads=*/2, /*head_dim=*/8, /*scale=*/0.6f};
  // Float32 dot products of 8 terms and softmax over <= 7 positions.
  CheckGqa(b, shape, 1e-5);

  TestCache cache(b.num_blocks, b.block_size, 2 * 2 * 8);
  FillContexts(cache, b.tables, b.seqs, 200);
  Tensor q = testing::RandomTensor({b.rows, 32}, 3);
  Tensor out = Tensor::Empty(DType::kF32, {b.rows, 32});
  std::fill_n(out.f32(), out.numel(), kSentinel);
  CreateCpuOps()->GqaAttention(q.mat(), cache.view, HostSeqTable::Build(b.seqs, b.rows, b.block_size).View(), shape, out.mat());
  for (int64_t c = 0; c < 32; ++c) EXPECT_EQ(out.f32()[3 * 32 + c], 0.0f);  // zeroed gap row
}

TEST(GqaTest, LongContextSplitIntoQueryTiles) {
  // Float32 sums over up to 4200 positions: as for MLA above.
  CheckGqa(LongBatch(), {2, 1, 4, 0.5f}, 1e-5);
}

}  // namespace
}  // namespace moeserve
