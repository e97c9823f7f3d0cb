// Grouped-query attention on the GPU (Qwen3-MoE): the paged attention kernel
// straight over the cache rows [keys of every KV head | values of every KV
// head]; a thread block takes the query heads of one KV head (and, when a
// group has fewer than 32 heads, several tokens).
#include "kernels/cuda/attention_kernel.h"
#include "kernels/cuda/contracts.h"
#include "kernels/cuda/cuda_ops.h"

namespace moeserve::cuda {

void CudaOps::GqaAttention(ConstMatView q, const PagedCacheView& cache, const SeqTable& seqs,
                           const GqaShape& shape, MatView out) {
  RequireView(q, "gqa q");
  RequireView(out, "gqa out");
  const int64_t hd = shape.head_dim, kv_heads = shape.kv_heads;
  Require(shape.q_heads > 0 && kv_heads > 0 && hd > 0 && shape.q_heads % kv_heads == 0,
          "gqa: q_heads must be a positive multiple of kv_heads");
  Require(q.cols == shape.q_heads * hd && out.rows == q.rows && out.cols == q.cols,
          "gqa q and out must be [T, q_heads * head_dim]");
  Require(cache.width == 2 * kv_heads * hd, "gqa cache width must be 2 * kv_heads * head_dim");
  RequireTable(seqs, q.rows, cache);
  const int64_t group = shape.q_heads / kv_heads;
  // Rows of no sequence come out zero; the kernel writes the others.
  ZeroRows(out);
  AttnParams p;
  SetAttentionWork(seqs.token_begin, seqs.num_tokens, seqs.context_len, seqs.block_tables,
                   seqs.max_blocks, seqs.num_seqs, seqs.max_tokens, shape.q_heads, group, p);
  if (p.num_items == 0) return;
  ChooseSplits(p.num_items, seqs.max_context, sm_count_, p);
  p.q = q.data;
  p.q_token_stride = q.stride;
  p.q_head_stride = hd;
  p.out = out.data;
  p.out_token_stride = out.stride;
  p.out_head_stride = hd;
  p.kv = static_cast<const uint8_t*>(cache.data);
  p.kv_row = ToDevice(cache.layout());
  p.block_size = cache.block_size;
  p.k_offset = 0;
  p.k_head_stride = hd;
  p.v_offset = kv_heads * hd;
  p.v_head_stride = hd;
  p.dk = p.dv = static_cast<int32_t>(hd);
  p.v_in_k = -1;
  p.scale = shape.softmax_scale;
  ScratchLayout layout;
  const size_t po_off = layout.Add<float>(PartialOutFloats(p));
  const size_t pml_off = layout.Add<float>(PartialMlFloats(p));
  void* base = scratch_.Reserve(layout.bytes());
  p.partial_out = At<float>(base, po_off);
  p.partial_ml = At<float>(base, pml_off);
  LaunchPagedAttention(p, stream_);
}

}  // namespace moeserve::cuda
