// Paged causal attention on the CPU: MLA in its two forms (DeepSeek-V3) and
// GQA (Qwen3-MoE).
//
// Every sequence is handled alone: its context rows are first copied out of
// the paged cache into one contiguous matrix, so that the products
// (decompression, Q K^T, P V) are plain sgemm calls. Queries are processed in
// tiles of tokens so the score matrix stays under kScoreBudgetFloats whatever
// the context length; a tile only reads the context up to its last token.
//
// Numerics follow the references: scores = (q . k) * softmax_scale in
// float32, softmax in float32 with the row maximum subtracted (its sum of
// exponentials accumulated in double), masked positions get probability 0.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "kernels/cpu/cpu_ops_impl.h"
#include "kernels/cpu/gemm.h"

namespace moeserve::cpu {
namespace {

// Upper bound on the floats of one score tile (64 MiB).
constexpr int64_t kScoreBudgetFloats = int64_t{1} << 24;

// Reads the cache rows of positions [0, len) of `seq` into a contiguous
// float32 [len, cache.width] tensor, dequantizing them (kv_cache_layout.h):
// whatever the cache dtype, the attention math after this is float32.
// RequireSeq() has validated the block table.
Tensor GatherContext(const PagedCacheView& cache, const SeqSlice& seq, int64_t len) {
  const KvRowLayout layout = cache.layout();
  Require(layout.valid(), "attention: invalid cache row layout");
  Tensor ctx = Tensor::Empty(DType::kF32, {len, cache.width});
  for (int64_t p = 0; p < len; ++p) {
    const int32_t block = seq.block_table[static_cast<size_t>(p / cache.block_size)];
    DequantizeKvRow(layout, cache.token(block, p % cache.block_size), ctx.f32() + p * cache.width);
  }
  return ctx;
}

// Scales raw scores and turns them into causal attention probabilities.
// Row r belongs to query token r / rows_per_token, at position
// first_pos + r / rows_per_token; it attends to columns [0, that position].
void CausalSoftmax(MatView scores, int64_t first_pos, int64_t rows_per_token, float scale) {
  for (int64_t r = 0; r < scores.rows; ++r) {
    float* s = scores.row(r);
    const int64_t visible = std::min(scores.cols, first_pos + r / rows_per_token + 1);
    float max = -INFINITY;
    for (int64_t c = 0; c < visible; ++c) {
      s[c] *= scale;
      max = std::fmax(max, s[c]);
    }
    double sum = 0.0;
    for (int64_t c = 0; c < visible; ++c) {
      s[c] = std::exp(s[c] - max);
      sum += s[c];
    }
    const float denom = static_cast<float>(sum);
    for (int64_t c = 0; c < visible; ++c) s[c] /= denom;
    std::fill(s + visible, s + scores.cols, 0.0f);
  }
}

// Tokens per query tile: the [tile * rows_per_token, context_len] score
// matrix fits the budget (a tile holds at least one token).
int64_t TileTokens(const SeqSlice& seq, int64_t rows_per_token) {
  const int64_t per_token = std::max<int64_t>(1, rows_per_token * seq.context_len);
  return std::clamp<int64_t>(kScoreBudgetFloats / per_token, 1,
                             std::max<int64_t>(1, seq.num_tokens));
}

// Calls fn(first token index within the sequence, tile tokens) for each tile
// of TileTokens() new tokens of `seq`.
void ForEachQueryTile(const SeqSlice& seq, int64_t rows_per_token,
                      const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t tile = TileTokens(seq, rows_per_token);
  for (int64_t j = 0; j < seq.num_tokens; j += tile) fn(j, std::min(tile, seq.num_tokens - j));
}

// The context length that tokens [0, j_end) of `seq` can see.
int64_t VisibleLen(const SeqSlice& seq, int64_t j_end) {
  return seq.context_len - seq.num_tokens + j_end;
}

// A view of `rows` rows, `cols` wide, starting at `data`, `stride` apart.
MatView View(float* data, int64_t rows, int64_t cols, int64_t stride) {
  return {data, rows, cols, stride};
}

void RequireMla(ConstMatView q, const Tensor& wkv_b, const PagedCacheView& cache,
                const Ops::MlaShape& s, MatView out) {
  RequireView(q, "mla q");
  RequireView(out, "mla out");
  Require(s.heads > 0 && s.qk_nope_head_dim >= 0 && s.qk_rope_head_dim >= 0 && s.v_head_dim > 0 &&
              s.kv_lora_rank > 0,
          "mla shape must be positive");
  Require(q.cols == s.heads * (s.qk_nope_head_dim + s.qk_rope_head_dim),
          "mla q must be [T, heads * (nope + rope)]");
  Require(out.rows == q.rows && out.cols == s.heads * s.v_head_dim,
          "mla out must be [T, heads * v_head_dim]");
  Require(cache.width == s.kv_lora_rank + s.qk_rope_head_dim,
          "mla cache width must be kv_lora_rank + rope");
  WeightMat(wkv_b, s.heads * (s.qk_nope_head_dim + s.v_head_dim), s.kv_lora_rank,
            "mla wkv_b must be F32 [heads * (nope + v), kv_lora_rank]");
}

// Zeroes the rows of `out` that no sequence of `seqs` covers.
void ZeroRowsOfNoSequence(const std::vector<SeqSlice>& seqs, MatView out) {
  std::vector<bool> covered(static_cast<size_t>(out.rows), false);
  for (const SeqSlice& s : seqs) {
    for (int64_t j = 0; j < s.num_tokens; ++j) covered[static_cast<size_t>(s.token_begin + j)] = true;
  }
  for (int64_t r = 0; r < out.rows; ++r) {
    if (!covered[static_cast<size_t>(r)]) {
      std::memset(out.row(r), 0, static_cast<size_t>(out.cols) * sizeof(float));
    }
  }
}

}  // namespace

// Decompresses each head's keys and values for the whole visible context
// (one sgemm per head), then attends with ordinary per-head products.
// The host slices are not read: the CPU reads the table, as every replayed
// op must.
void CpuOps::MlaAttentionPrefill(ConstMatView q, const Tensor& wkv_b, const PagedCacheView& cache,
                                 const SeqTable& table, std::span<const SeqSlice> /*host*/,
                                 const MlaShape& shape, MatView out) {
  RequireMla(q, wkv_b, cache, shape, out);
  const std::vector<SeqSlice> seqs = ReadSeqs(table, q.rows, cache);
  const int64_t nope = shape.qk_nope_head_dim, rope = shape.qk_rope_head_dim;
  const int64_t vd = shape.v_head_dim, lora = shape.kv_lora_rank, qk = nope + rope;
  const ConstMatView w = wkv_b.mat();
  for (const SeqSlice& seq : seqs) {
    const Tensor ctx = GatherContext(cache, seq, seq.context_len);
    const ConstMatView latent = ctx.mat().Columns(0, lora);
    const ConstMatView k_pe = ctx.mat().Columns(lora, rope);
    Tensor kv = Tensor::Empty(DType::kF32, {seq.context_len, nope + vd});  // one head's [k | v]
    Tensor scores = Tensor::Empty(DType::kF32, {TileTokens(seq, 1) * seq.context_len});
    for (int64_t h = 0; h < shape.heads; ++h) {
      GemmNT(latent, w.Rows(h * (nope + vd), nope + vd), kv.mat());
      ForEachQueryTile(seq, 1, [&](int64_t j0, int64_t n) {
        const int64_t len = VisibleLen(seq, j0 + n);
        const ConstMatView qh = q.Rows(seq.token_begin + j0, n).Columns(h * qk, qk);
        MatView s = View(scores.f32(), n, len, len);
        GemmNT(qh.Columns(0, nope), kv.mat().Rows(0, len).Columns(0, nope), s);
        GemmNT(qh.Columns(nope, rope), k_pe.Rows(0, len), s, 1.0f);
        CausalSoftmax(s, len - n, 1, shape.softmax_scale);
        GemmNN(s, kv.mat().Rows(0, len).Columns(nope, vd),
               out.Rows(seq.token_begin + j0, n).Columns(h * vd, vd));
      });
    }
  }
}

// Folds W_k into the queries (q_lat = q_nope W_k, per head), attends over the
// cache rows [latent | k_pe] directly with all heads stacked as rows, then
// applies W_v to the attended latent.
void CpuOps::MlaAttentionAbsorbed(ConstMatView q, const Tensor& wkv_b, const PagedCacheView& cache,
                                  const SeqTable& table, const MlaShape& shape, MatView out) {
  RequireMla(q, wkv_b, cache, shape, out);
  const std::vector<SeqSlice> seqs = ReadSeqs(table, q.rows, cache);
  ZeroRowsOfNoSequence(seqs, out);
  const int64_t heads = shape.heads, nope = shape.qk_nope_head_dim;
  const int64_t rope = shape.qk_rope_head_dim, vd = shape.v_head_dim;
  const int64_t lora = shape.kv_lora_rank, qk = nope + rope, width = cache.width;
  const ConstMatView w = wkv_b.mat();
  for (const SeqSlice& seq : seqs) {
    const Tensor ctx = GatherContext(cache, seq, seq.context_len);
    ForEachQueryTile(seq, heads, [&](int64_t j0, int64_t n) {
      const int64_t len = VisibleLen(seq, j0 + n);
      const ConstMatView q_tile = q.Rows(seq.token_begin + j0, n);
      // Row (j, h) of qa, at j * heads + h, is head h's [q_lat | q_pe].
      Tensor qa = Tensor::Empty(DType::kF32, {n * heads, width});
      for (int64_t h = 0; h < heads; ++h) {
        MatView qa_h = View(qa.f32() + h * width, n, width, heads * width);
        GemmNN(q_tile.Columns(h * qk, nope), w.Rows(h * (nope + vd), nope), qa_h.Columns(0, lora));
        for (int64_t j = 0; j < n; ++j) {
          std::memcpy(qa_h.row(j) + lora, q_tile.row(j) + h * qk + nope,
                      static_cast<size_t>(rope) * sizeof(float));
        }
      }
      Tensor scores = Tensor::Empty(DType::kF32, {n * heads, len});
      GemmNT(qa.mat(), ctx.mat().Rows(0, len), scores.mat());
      CausalSoftmax(scores.mat(), len - n, heads, shape.softmax_scale);
      Tensor o_lat = Tensor::Empty(DType::kF32, {n * heads, lora});
      GemmNN(scores.mat(), ctx.mat().Rows(0, len).Columns(0, lora), o_lat.mat());
      for (int64_t h = 0; h < heads; ++h) {
        GemmNT(View(o_lat.f32() + h * lora, n, lora, heads * lora),
               w.Rows(h * (nope + vd) + nope, vd),
               out.Rows(seq.token_begin + j0, n).Columns(h * vd, vd));
      }
    });
  }
}

void CpuOps::GqaAttention(ConstMatView q, const PagedCacheView& cache, const SeqTable& table,
                          const GqaShape& shape, MatView out) {
  RequireView(q, "gqa q");
  RequireView(out, "gqa out");
  const int64_t hd = shape.head_dim, kv_heads = shape.kv_heads;
  Require(shape.q_heads > 0 && kv_heads > 0 && hd > 0 && shape.q_heads % kv_heads == 0,
          "gqa: q_heads must be a positive multiple of kv_heads");
  Require(q.cols == shape.q_heads * hd && out.rows == q.rows && out.cols == q.cols,
          "gqa q and out must be [T, q_heads * head_dim]");
  Require(cache.width == 2 * kv_heads * hd, "gqa cache width must be 2 * kv_heads * head_dim");
  const int64_t group = shape.q_heads / kv_heads;
  const std::vector<SeqSlice> seqs = ReadSeqs(table, q.rows, cache);
  ZeroRowsOfNoSequence(seqs, out);
  for (const SeqSlice& seq : seqs) {
    const Tensor ctx = GatherContext(cache, seq, seq.context_len);
    Tensor scores = Tensor::Empty(DType::kF32, {TileTokens(seq, 1) * seq.context_len});
    for (int64_t h = 0; h < shape.q_heads; ++h) {
      const int64_t kvh = h / group;
      ForEachQueryTile(seq, 1, [&](int64_t j0, int64_t n) {
        const int64_t len = VisibleLen(seq, j0 + n);
        const ConstMatView rows = ctx.mat().Rows(0, len);
        MatView s = View(scores.f32(), n, len, len);
        GemmNT(q.Rows(seq.token_begin + j0, n).Columns(h * hd, hd), rows.Columns(kvh * hd, hd), s);
        CausalSoftmax(s, len - n, 1, shape.softmax_scale);
        GemmNN(s, rows.Columns((kv_heads + kvh) * hd, hd),
               out.Rows(seq.token_begin + j0, n).Columns(h * hd, hd));
      });
    }
  }
}

}  // namespace moeserve::cpu
