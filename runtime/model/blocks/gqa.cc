#include "runtime/model/blocks/gqa.h"

#include <vector>

#include "runtime/model/architectures.h"

namespace moeserve {

absl::StatusOr<GqaWeights> LoadGqa(const WeightReader& reader, const std::string& prefix,
                                   const ModelConfig& c, bool qk_norm) {
  GqaWeights w;
  const int64_t q_dim = c.num_attention_heads * c.head_dim;
  const int64_t kv_dim = c.num_key_value_heads * c.head_dim;
  struct Item {
    const char* name;
    std::vector<int64_t> shape;
    WeightUse use;
    Tensor* out;
  };
  constexpr WeightUse kMatrix = WeightUse::kMatrix, kVector = WeightUse::kVector;
  std::vector<Item> items = {{".q_proj.weight", {q_dim, c.hidden_size}, kMatrix, &w.q_proj},
                             {".k_proj.weight", {kv_dim, c.hidden_size}, kMatrix, &w.k_proj},
                             {".v_proj.weight", {kv_dim, c.hidden_size}, kMatrix, &w.v_proj},
                             {".o_proj.weight", {c.hidden_size, q_dim}, kMatrix, &w.o_proj}};
  if (qk_norm) {
    items.push_back({".q_norm.weight", {c.head_dim}, kVector, &w.q_norm});
    items.push_back({".k_norm.weight", {c.head_dim}, kVector, &w.k_norm});
  }
  for (const Item& item : items) {
    if (absl::Status s = ReadWeight(reader, prefix + item.name, item.shape, item.use, item.out);
        !s.ok()) {
      return s;
    }
  }
  return w;
}

void GqaForward(StepContext& step, const GqaWeights& w, const ModelConfig& c, const RopeTable& rope,
                const AttentionBatch& batch, const PagedCacheView& cache, ConstMatView x,
                MatView out) {
  Ops& ops = step.ops;
  Workspace& ws = step.ws;
  const Workspace::Mark mark = ws.mark();
  const int64_t tokens = x.rows;
  const int64_t d = c.head_dim;
  const int64_t q_dim = c.num_attention_heads * d;
  const int64_t kv_dim = c.num_key_value_heads * d;

  MatView q = ws.Matrix(tokens, q_dim);
  ops.Linear(x, w.q_proj, q);
  MatView k = ws.Matrix(tokens, kv_dim);
  ops.Linear(x, w.k_proj, k);
  // The cache row of each token: [keys of every KV head | values].
  MatView kv = ws.Matrix(tokens, 2 * kv_dim);
  ops.Linear(x, w.v_proj, kv.Columns(kv_dim, kv_dim));

  // Per-head views: one row per (token, head).
  MatView q_heads{q.data, tokens * c.num_attention_heads, d, d};
  MatView k_heads{k.data, tokens * c.num_key_value_heads, d, d};
  if (!w.q_norm.empty()) ops.RmsNorm(q_heads, w.q_norm, c.rms_norm_eps, q_heads);
  if (!w.k_norm.empty()) ops.RmsNorm(k_heads, w.k_norm, c.rms_norm_eps, k_heads);
  ops.Rope(q_heads, c.num_attention_heads, batch.positions, rope);
  ops.Rope(k_heads, c.num_key_value_heads, batch.positions, rope);
  // Place the finished keys beside the values (a gather with the identity).
  ops.GatherRows(k, step.iota.subspan(0, static_cast<size_t>(tokens)), kv.Columns(0, kv_dim));
  ops.CacheWrite(kv, batch.table, cache);

  Ops::GqaShape shape{c.num_attention_heads, c.num_key_value_heads, d, c.softmax_scale()};
  MatView attn = ws.Matrix(tokens, q_dim);
  ops.GqaAttention(q, cache, batch.table, shape, attn);
  ops.Linear(attn, w.o_proj, out);
  ws.Release(mark);  // later work of this stream runs after these ops
}

}  // namespace moeserve
