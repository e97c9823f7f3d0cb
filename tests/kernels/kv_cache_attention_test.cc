// Paged attention (MLA in both forms, GQA) over bf16 and fp8 caches, on a
// ragged batch with scattered block tables.
//
// Two checks per op and dtype:
//  1. Exactness of the read path: attention over the quantized cache equals,
//     bit for bit, attention over a float32 cache holding the dequantized
//     rows (the dtype changes only what GatherContext reads; the math after
//     it is the float32 reference's).
//  2. Distance to the float32 cache, within a bound derived from the
//     rounding. Let e(x) be the stored-value error bound of each cache entry
//     (kv_cache_layout.h: bf16 2^-8 |x|; fp8 2^-4 |x| + 2^-10 amax/448 of
//     its tile; bf16 for the MLA rope key). A query's logit for context row i
//     moves by at most delta_i = scale * sum_d |q_d| e(k_id) (for MLA's
//     absorbed form q = [q_nope W_k | q_pe] over the row [latent | k_pe];
//     the prefill form computes the same function). With every logit moved
//     by at most delta = max_i delta_i, each probability moves by a factor in
//     [e^-2delta, e^2delta], so for o = sum_i p_i v_i:
//       |o' - o| <= (e^(2 delta) - 1) max_i |v'_i| + max_i e(v_i),
//     and for MLA, out = W_v o_lat: |out' - out| <= sum_c |W_v[d, c]| * that
//     bound for latent column c. Both sides are float32 computations, so the
//     bound gets 1e-5 relative + 1e-6 absolute slack (each side is ~1e-6 from
//     exact; kernels_attention_test).
// The bound is worst case (every rounding error aligned against the query);
// the measured deviations are far below it (printed; see docs/architecture.md).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/kv_cache_layout.h"
#include "tests/kernels/kernel_test_util.h"

namespace moeserve {
namespace {

using testing::RandomVector;

// Three sequences and one batch row (3) that belongs to none (as in
// kernels_attention_test): a chunked prefill, a decode and a fresh prefill.
struct RaggedBatch {
  int64_t rows = 10;
  int64_t block_size = 4;
  int64_t num_blocks = 8;
  std::vector<std::vector<int32_t>> tables = {{5, 2}, {1, 7}, {3, 0}};
  std::vector<SeqSlice> seqs = {{0, 3, 7, tables[0]}, {4, 1, 6, tables[1]}, {5, 5, 5, tables[2]}};
};

// A paged cache in one layout, its bytes owned here.
struct Cache {
  std::vector<uint8_t> bytes;
  PagedCacheView view;
  Cache(const KvRowLayout& l, const RaggedBatch& b)
      : bytes(static_cast<size_t>(b.num_blocks * b.block_size * l.row_bytes()), 0),
        view{bytes.data(), b.num_blocks, b.block_size, l.width, l.dtype, l.quantized_cols, l.tile} {
  }
};

// Context rows (float) of every sequence, per sequence [context_len, width].
std::vector<std::vector<float>> ContextRows(const RaggedBatch& b, int64_t width, uint32_t seed) {
  std::vector<std::vector<float>> rows;
  for (size_t s = 0; s < b.seqs.size(); ++s) {
    rows.push_back(RandomVector(static_cast<size_t>(b.seqs[s].context_len * width), seed + s));
  }
  return rows;
}

void Fill(Cache& c, const RaggedBatch& b, const std::vector<std::vector<float>>& rows) {
  const KvRowLayout l = c.view.layout();
  for (size_t s = 0; s < b.seqs.size(); ++s) {
    for (int64_t p = 0; p < b.seqs[s].context_len; ++p) {
      const int32_t block = b.tables[s][static_cast<size_t>(p / b.block_size)];
      QuantizeKvRow(l, rows[s].data() + p * l.width, c.view.token(block, p % b.block_size));
    }
  }
}

// The rows as stored and read back, and each entry's error bound.
struct Stored {
  std::vector<std::vector<float>> values;
  std::vector<std::vector<double>> bounds;
};
Stored StoreAll(const KvRowLayout& l, const std::vector<std::vector<float>>& rows) {
  Stored st;
  std::vector<uint8_t> buf(static_cast<size_t>(l.row_bytes()));
  for (const std::vector<float>& seq : rows) {
    std::vector<float> v(seq.size());
    std::vector<double> e(seq.size());
    for (size_t p = 0; p * l.width < seq.size(); ++p) {
      const float* in = seq.data() + p * l.width;
      QuantizeKvRow(l, in, buf.data());
      DequantizeKvRow(l, buf.data(), v.data() + p * l.width);
      for (int64_t c = 0; c < l.width; ++c) {
        double bound = std::ldexp(std::fabs(double{in[c]}), -8);  // bf16
        if (l.dtype == KvCacheDtype::kFP8E4M3 && c < l.quantized_cols) {
          const int64_t t0 = c / l.tile * l.tile, t1 = std::min(l.quantized_cols, t0 + l.tile);
          double amax = 0;
          for (int64_t i = t0; i < t1; ++i) amax = std::max(amax, std::fabs(double{in[i]}));
          bound = std::ldexp(std::fabs(double{in[c]}), -4) + std::ldexp(amax / 448, -10) +
                  std::ldexp(std::fabs(double{in[c]}), -20);
        }
        e[p * l.width + c] = bound;
      }
    }
    st.values.push_back(std::move(v));
    st.bounds.push_back(std::move(e));
  }
  return st;
}

// Largest |got - want| and largest (|got - want| / bound), for the record.
struct Figures {
  double max_abs = 0, max_ratio = 0;
};

void ExpectBitwiseEqual(const std::vector<float>& a, const std::vector<float>& b,
                        const char* what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << what << " element " << i;
}

// --- MLA ------------------------------------------------------------------

constexpr Ops::MlaShape kMla{/*heads=*/4,
                             /*nope=*/8,
                             /*rope=*/8,
                             /*v=*/8,
                             /*kv_lora_rank=*/160,
                             /*softmax_scale=*/0.25f};

// The derived bound of every output element of `q` (see the header).
std::vector<double> MlaBound(const RaggedBatch& b, const std::vector<float>& q,
                             const std::vector<float>& wkv_b, const Stored& st) {
  const int64_t H = kMla.heads, nope = kMla.qk_nope_head_dim, rope = kMla.qk_rope_head_dim;
  const int64_t vd = kMla.v_head_dim, lora = kMla.kv_lora_rank, width = lora + rope;
  const int64_t qk = nope + rope;
  std::vector<double> bound(static_cast<size_t>(b.rows * H * vd), 0.0);
  for (size_t s = 0; s < b.seqs.size(); ++s) {
    const SeqSlice& seq = b.seqs[s];
    const std::vector<float>& v = st.values[s];
    const std::vector<double>& e = st.bounds[s];
    for (int64_t j = 0; j < seq.num_tokens; ++j) {
      const int64_t row = seq.token_begin + j, visible = seq.context_len - seq.num_tokens + j + 1;
      for (int64_t h = 0; h < H; ++h) {
        const float* qh = q.data() + row * H * qk + h * qk;
        std::vector<double> qa(static_cast<size_t>(width), 0.0);  // [q_nope W_k | q_pe]
        for (int64_t k = 0; k < nope; ++k) {
          const float* wk = wkv_b.data() + (h * (nope + vd) + k) * lora;
          for (int64_t c = 0; c < lora; ++c) qa[c] += double{qh[k]} * wk[c];
        }
        for (int64_t r = 0; r < rope; ++r) qa[lora + r] = qh[nope + r];
        double delta = 0;
        for (int64_t i = 0; i < visible; ++i) {
          double d = 0;
          for (int64_t c = 0; c < width; ++c) d += std::fabs(qa[c]) * e[i * width + c];
          delta = std::max(delta, kMla.softmax_scale * d);
        }
        std::vector<double> lat_bound(static_cast<size_t>(lora)),
            lat_max(static_cast<size_t>(lora));
        for (int64_t c = 0; c < lora; ++c) {
          double vmax = 0, emax = 0;
          for (int64_t i = 0; i < visible; ++i) {
            vmax = std::max(vmax, std::fabs(double{v[i * width + c]}));
            emax = std::max(emax, e[i * width + c]);
          }
          lat_bound[c] = std::expm1(2 * delta) * vmax + emax;
          lat_max[c] = vmax;
        }
        for (int64_t d = 0; d < vd; ++d) {
          const float* wv = wkv_b.data() + (h * (nope + vd) + nope + d) * lora;
          double sum = 0, mag = 0;
          for (int64_t c = 0; c < lora; ++c) {
            sum += std::fabs(double{wv[c]}) * lat_bound[c];
            mag += std::fabs(double{wv[c]}) * lat_max[c];
          }
          bound[static_cast<size_t>(row * H * vd + h * vd + d)] = sum + 1e-5 * mag + 1e-6;
        }
      }
    }
  }
  return bound;
}

class KvCacheMlaTest : public ::testing::TestWithParam<std::tuple<KvCacheDtype, bool>> {};

TEST_P(KvCacheMlaTest, WithinTheRoundingBoundOfTheF32Cache) {
  const auto [dtype, absorbed] = GetParam();
  auto ops = CreateCpuOps();
  RaggedBatch b;
  const int64_t H = kMla.heads, qk = kMla.qk_nope_head_dim + kMla.qk_rope_head_dim;
  const int64_t vd = kMla.v_head_dim, lora = kMla.kv_lora_rank;
  const KvRowLayout l = MlaKvRowLayout(dtype, lora, kMla.qk_rope_head_dim);
  const KvRowLayout f32 = MlaKvRowLayout(KvCacheDtype::kF32, lora, kMla.qk_rope_head_dim);
  const std::vector<std::vector<float>> rows = ContextRows(b, l.width, 100);
  const Stored st = StoreAll(l, rows);
  Cache exact(f32, b), quant(l, b), readback(f32, b);
  Fill(exact, b, rows);
  Fill(quant, b, rows);
  Fill(readback, b, st.values);
  const std::vector<float> q = RandomVector(static_cast<size_t>(b.rows * H * qk), 7);
  const std::vector<float> w =
      RandomVector(static_cast<size_t>(H * (kMla.qk_nope_head_dim + vd) * lora), 8, 0.1f);
  const Tensor wkv_b = Tensor::FromF32({H * (kMla.qk_nope_head_dim + vd), lora}, w);
  auto run = [&](const Cache& c) {
    std::vector<float> out(static_cast<size_t>(b.rows * H * vd), 0.0f);
    const ConstMatView qv{q.data(), b.rows, H * qk, H * qk};
    const MatView ov{out.data(), b.rows, H * vd, H * vd};
    if (absorbed) {
      ops->MlaAttentionAbsorbed(qv, wkv_b, c.view, HostSeqTable::Build(b.seqs, b.rows, b.block_size).View(), kMla, ov);
    } else {
      ops->MlaAttentionPrefill(qv, wkv_b, c.view, HostSeqTable::Build(b.seqs, b.rows, b.block_size).View(), b.seqs, kMla, ov);
    }
    return out;
  };
  const std::vector<float> want = run(exact), got = run(quant);
  ExpectBitwiseEqual(got, run(readback), "quantized vs dequantized-f32 cache");
  const std::vector<double> bound = MlaBound(b, q, w, st);
  Figures f;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double{got[i]} - want[i]);
    EXPECT_LE(err, bound[i]) << "output element " << i;
    f.max_abs = std::max(f.max_abs, err);
    if (bound[i] > 0) f.max_ratio = std::max(f.max_ratio, err / bound[i]);
  }
  std::printf("mla %s %s: max |out - out_f32| = %.3g, max share of the bound = %.3g\n",
              std::string(KvCacheDtypeName(dtype)).c_str(), absorbed ? "absorbed" : "prefill",
              f.max_abs, f.max_ratio);
}

// --- GQA ------------------------------------------------------------------

constexpr Ops::GqaShape kGqa{/*q_heads=*/4, /*kv_heads=*/2, /*head_dim=*/16,
                             /*softmax_scale=*/0.25f};

std::vector<double> GqaBound(const RaggedBatch& b, const std::vector<float>& q, const Stored& st) {
  const int64_t H = kGqa.q_heads, kvh = kGqa.kv_heads, hd = kGqa.head_dim, width = 2 * kvh * hd;
  std::vector<double> bound(static_cast<size_t>(b.rows * H * hd), 0.0);
  for (size_t s = 0; s < b.seqs.size(); ++s) {
    const SeqSlice& seq = b.seqs[s];
    const std::vector<float>& v = st.values[s];
    const std::vector<double>& e = st.bounds[s];
    for (int64_t j = 0; j < seq.num_tokens; ++j) {
      const int64_t row = seq.token_begin + j, visible = seq.context_len - seq.num_tokens + j + 1;
      for (int64_t h = 0; h < H; ++h) {
        const int64_t g = h / (H / kvh);
        const float* qh = q.data() + row * H * hd + h * hd;
        double delta = 0;
        for (int64_t i = 0; i < visible; ++i) {
          double d = 0;
          for (int64_t k = 0; k < hd; ++k)
            d += std::fabs(double{qh[k]}) * e[i * width + g * hd + k];
          delta = std::max(delta, kGqa.softmax_scale * d);
        }
        for (int64_t k = 0; k < hd; ++k) {
          double vmax = 0, emax = 0;
          for (int64_t i = 0; i < visible; ++i) {
            const int64_t c = i * width + (kvh + g) * hd + k;
            vmax = std::max(vmax, std::fabs(double{v[c]}));
            emax = std::max(emax, e[c]);
          }
          bound[static_cast<size_t>(row * H * hd + h * hd + k)] =
              std::expm1(2 * delta) * vmax + emax + 1e-5 * vmax + 1e-6;
        }
      }
    }
  }
  return bound;
}

class KvCacheGqaTest : public ::testing::TestWithParam<KvCacheDtype> {};

TEST_P(KvCacheGqaTest, WithinTheRoundingBoundOfTheF32Cache) {
  const KvCacheDtype dtype = GetParam();
  auto ops = CreateCpuOps();
  RaggedBatch b;
  const int64_t H = kGqa.q_heads, hd = kGqa.head_dim;
  const KvRowLayout l = GqaKvRowLayout(dtype, kGqa.kv_heads, hd);
  const KvRowLayout f32 = GqaKvRowLayout(KvCacheDtype::kF32, kGqa.kv_heads, hd);
  const std::vector<std::vector<float>> rows = ContextRows(b, l.width, 200);
  const Stored st = StoreAll(l, rows);
  Cache exact(f32, b), quant(l, b), readback(f32, b);
  Fill(exact, b, rows);
  Fill(quant, b, rows);
  Fill(readback, b, st.values);
  const std::vector<float> q = RandomVector(static_cast<size_t>(b.rows * H * hd), 9);
  auto run = [&](const Cache& c) {
    std::vector<float> out(static_cast<size_t>(b.rows * H * hd), 0.0f);
    ops->GqaAttention({q.data(), b.rows, H * hd, H * hd}, c.view, HostSeqTable::Build(b.seqs, b.rows, b.block_size).View(), kGqa,
                      {out.data(), b.rows, H * hd, H * hd});
    return out;
  };
  const std::vector<float> want = run(exact), got = run(quant);
  ExpectBitwiseEqual(got, run(readback), "quantized vs dequantized-f32 cache");
  const std::vector<double> bound = GqaBound(b, q, st);
  Figures f;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double{got[i]} - want[i]);
    EXPECT_LE(err, bound[i]) << "output element " << i;
    f.max_abs = std::max(f.max_abs, err);
    if (bound[i] > 0) f.max_ratio = std::max(f.max_ratio, err / bound[i]);
  }
  std::printf("gqa %s: max |out - out_f32| = %.3g, max share of the bound = %.3g\n",
              std::string(KvCacheDtypeName(dtype)).c_str(), f.max_abs, f.max_ratio);
}

std::string DtypeName(KvCacheDtype d) { return std::string(KvCacheDtypeName(d)); }

INSTANTIATE_TEST_SUITE_P(Dtypes, KvCacheMlaTest,
                         ::testing::Combine(::testing::Values(KvCacheDtype::kBF16,
                                                              KvCacheDtype::kFP8E4M3),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return DtypeName(std::get<0>(info.param)) +
                                  (std::get<1>(info.param) ? "_absorbed" : "_prefill");
                         });
INSTANTIATE_TEST_SUITE_P(Dtypes, KvCacheGqaTest,
                         ::testing::Values(KvCacheDtype::kBF16, KvCacheDtype::kFP8E4M3),
                         [](const auto& info) { return DtypeName(info.param); });

}  // namespace
}  // namespace moeserve
