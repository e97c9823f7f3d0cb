#include "runtime/model/blocks/mla.h"

#include <algorithm>
#include <vector>

#include "runtime/model/architectures.h"

namespace moeserve {
namespace {

// True when the prefill form costs fewer multiply-adds for this sequence:
//   prefill  = ctx * H * lora * (nope + v)        decompress the context
//            + n * ctx * H * (nope + rope + v)     attend per head
//   absorbed = n * H * lora * (nope + v)           fold wkv_b into q and out
//            + n * ctx * H * (2 * lora + rope)     attend over the latent
bool PrefillIsCheaper(const ModelConfig& c, const SeqSlice& s) {
  const double n = static_cast<double>(s.num_tokens);
  const double ctx = static_cast<double>(s.context_len);
  const double proj = static_cast<double>(c.kv_lora_rank * (c.qk_nope_head_dim + c.v_head_dim));
  const double prefill = ctx * proj + n * ctx * static_cast<double>(c.qk_head_dim() + c.v_head_dim);
  const double absorbed =
      n * proj + n * ctx * static_cast<double>(2 * c.kv_lora_rank + c.qk_rope_head_dim);
  return prefill < absorbed;
}

}  // namespace

absl::StatusOr<MlaWeights> LoadMla(const WeightReader& reader, const std::string& prefix,
                                   const ModelConfig& c) {
  MlaWeights w;
  const int64_t heads = c.num_attention_heads;
  const int64_t hidden = c.hidden_size;
  struct Item {
    const char* name;
    std::vector<int64_t> shape;
    WeightUse use;
    Tensor* out;
  };
  constexpr WeightUse kMatrix = WeightUse::kMatrix, kVector = WeightUse::kVector;
  std::vector<Item> items;
  if (c.q_lora_rank > 0) {
    items.push_back({".q_a_proj.weight", {c.q_lora_rank, hidden}, kMatrix, &w.q_a_proj});
    items.push_back({".q_a_layernorm.weight", {c.q_lora_rank}, kVector, &w.q_a_norm});
    items.push_back(
        {".q_b_proj.weight", {heads * c.qk_head_dim(), c.q_lora_rank}, kMatrix, &w.q_b_proj});
  } else {
    items.push_back({".q_proj.weight", {heads * c.qk_head_dim(), hidden}, kMatrix, &w.q_proj});
  }
  items.push_back({".kv_a_proj_with_mqa.weight",
                   {c.kv_lora_rank + c.qk_rope_head_dim, hidden},
                   kMatrix,
                   &w.kv_a_proj});
  items.push_back({".kv_a_layernorm.weight", {c.kv_lora_rank}, kVector, &w.kv_a_norm});
  items.push_back({".kv_b_proj.weight",
                   {heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank},
                   WeightUse::kMlaKvB,
                   &w.kv_b_proj});
  items.push_back({".o_proj.weight", {hidden, heads * c.v_head_dim}, kMatrix, &w.o_proj});
  for (const Item& item : items) {
    if (absl::Status s = ReadWeight(reader, prefix + item.name, item.shape, item.use, item.out);
        !s.ok()) {
      return s;
    }
  }
  return w;
}

void MlaForward(StepContext& step, const MlaWeights& w, const ModelConfig& c, const RopeTable& rope,
                MlaForm form, const AttentionBatch& batch, const PagedCacheView& cache,
                ConstMatView x, MatView out) {
  Ops& ops = step.ops;
  Workspace& ws = step.ws;
  const Workspace::Mark mark = ws.mark();
  const int64_t tokens = x.rows;
  const int64_t heads = c.num_attention_heads;
  const int64_t qk_dim = c.qk_head_dim();

  // Queries: [T, heads * (nope + rope)], rope applied to each head's tail.
  MatView q = ws.Matrix(tokens, heads * qk_dim);
  if (c.q_lora_rank > 0) {
    MatView qa = ws.Matrix(tokens, c.q_lora_rank);
    ops.Linear(x, w.q_a_proj, qa);
    ops.RmsNorm(qa, w.q_a_norm, c.rms_norm_eps, qa);
    ops.Linear(qa, w.q_b_proj, q);
  } else {
    ops.Linear(x, w.q_proj, q);
  }
  MatView q_heads{q.data, tokens * heads, qk_dim, qk_dim};
  ops.Rope(q_heads.Columns(c.qk_nope_head_dim, c.qk_rope_head_dim), heads, batch.positions, rope);

  // The cache row of each token: [normalized latent | roped shared key].
  MatView kv = ws.Matrix(tokens, c.kv_cache_width());
  ops.Linear(x, w.kv_a_proj, kv);
  MatView latent = kv.Columns(0, c.kv_lora_rank);
  ops.RmsNorm(latent, w.kv_a_norm, c.rms_norm_eps, latent);
  ops.Rope(kv.Columns(c.kv_lora_rank, c.qk_rope_head_dim), 1, batch.positions, rope);
  ops.CacheWrite(kv, batch.table, cache);

  Ops::MlaShape shape{heads,        c.qk_nope_head_dim, c.qk_rope_head_dim,
                      c.v_head_dim, c.kv_lora_rank,     c.softmax_scale()};
  MatView attn = ws.Matrix(tokens, heads * c.v_head_dim);
  if (batch.host.empty()) {
    // A step captured for replay: nothing may depend on its sequences, and
    // every one is a decode token, which the absorbed form serves best.
    ops.MlaAttentionAbsorbed(q, w.kv_b_proj, cache, batch.table, shape, attn);
  } else {
    std::vector<SeqSlice> prefill_seqs;
    // Per table entry (the table may pad past the host's sequences; while
    // planning it has none).
    std::vector<int32_t> prefill_tokens(
        std::max(static_cast<size_t>(batch.table.num_seqs), batch.host.size()), 0);
    std::vector<int32_t> absorbed_tokens(prefill_tokens.size(), 0);
    for (size_t i = 0; i < batch.host.size(); ++i) {
      const SeqSlice& s = batch.host[i];
      const bool prefill =
          form == MlaForm::kPrefill || (form == MlaForm::kAuto && PrefillIsCheaper(c, s));
      if (prefill) prefill_seqs.push_back(s);
      (prefill ? prefill_tokens : absorbed_tokens)[i] = static_cast<int32_t>(s.num_tokens);
    }
    if (prefill_seqs.size() == batch.host.size()) {
      ops.MlaAttentionPrefill(q, w.kv_b_proj, cache, batch.table, batch.host, shape, attn);
    } else if (prefill_seqs.empty()) {
      ops.MlaAttentionAbsorbed(q, w.kv_b_proj, cache, batch.table, shape, attn);
    } else {
      // Each form over the table with the other form's sequences masked out
      // (no tokens). The absorbed form first, over the span of rows its
      // sequences cover (it zeroes the other rows of its span), then the
      // prefill form writes its rows.
      int64_t first = tokens, end = 0;
      std::vector<int32_t> begins(prefill_tokens.size(), 0);
      for (size_t i = 0; i < batch.host.size(); ++i) {
        if (absorbed_tokens[i] == 0) continue;
        first = std::min(first, batch.host[i].token_begin);
        end = std::max(end, batch.host[i].token_begin + batch.host[i].num_tokens);
      }
      for (size_t i = 0; i < batch.host.size(); ++i) {
        if (absorbed_tokens[i] > 0) begins[i] = static_cast<int32_t>(batch.host[i].token_begin - first);
      }
      SeqTable absorbed = batch.table;
      absorbed.token_begin = step.upload(begins).data();
      absorbed.num_tokens = step.upload(absorbed_tokens).data();
      absorbed.rows = end - first;
      absorbed.max_tokens = *std::max_element(absorbed_tokens.begin(), absorbed_tokens.end());
      absorbed.slots = nullptr;  // attention reads no slots
      ops.MlaAttentionAbsorbed(q.Rows(first, end - first), w.kv_b_proj, cache, absorbed, shape,
                               attn.Rows(first, end - first));
      SeqTable prefill = batch.table;
      prefill.num_tokens = step.upload(prefill_tokens).data();
      ops.MlaAttentionPrefill(q, w.kv_b_proj, cache, prefill, prefill_seqs, shape, attn);
    }
  }
  ops.Linear(attn, w.o_proj, out);
  // Later work of this stream may reuse the memory: it runs after these ops.
  ws.Release(mark);
}

}  // namespace moeserve
