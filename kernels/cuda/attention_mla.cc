// Multi-head latent attention on the GPU, both forms of ops.h.
//
// Absorbed form (decode): q_lat = q_nope W_k per head (one strided-batched
// cuBLASLt product over the heads), [q_lat | q_pe] attends over the cache rows
// [latent | k_pe] directly (all heads of a token share them, so 32 heads ride
// in one thread block), then out = o_lat W_v^T per head (another batched
// product).
// Prefill form: per sequence, the context's latents are decompressed into
// per-head [k_nope | k_pe | v] rows (two batched products, heads in chunks
// that bound the buffer), then ordinary causal attention per head.
#include <algorithm>

#include "kernels/cuda/attention_kernel.h"
#include "kernels/cuda/contracts.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/kv_cache.h"
#include "kernels/cuda/quantize.h"

namespace moeserve::cuda {
namespace {

// Upper bound on the decompressed keys and values of one head chunk.
constexpr int64_t kPrefillKvBudgetBytes = int64_t{256} << 20;

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
  RequireDeviceWeight(wkv_b, s.heads * (s.qk_nope_head_dim + s.v_head_dim), s.kv_lora_rank,
                      DType::kF32, DType::kBF16,
                      "mla wkv_b must be an F32 or BF16 device tensor [heads * (nope + v), lora]");
}

// wkv_b's element `offset` (rows are kv_lora_rank wide).
const void* WeightAt(const Tensor& w, int64_t offset) {
  return static_cast<const char*>(w.raw()) + offset * static_cast<int64_t>(DTypeSize(w.dtype()));
}

int64_t RoundUp(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

}  // namespace

void CudaOps::MlaAttentionAbsorbed(ConstMatView q, const Tensor& wkv_b, const PagedCacheView& cache,
                                   const SeqTable& seqs, const MlaShape& shape, MatView out) {
  RequireMla(q, wkv_b, cache, shape, out);
  RequireTable(seqs, q.rows, cache);
  const int64_t heads = shape.heads, nope = shape.qk_nope_head_dim, rope = shape.qk_rope_head_dim;
  const int64_t vd = shape.v_head_dim, lora = shape.kv_lora_rank, qk = nope + rope;
  const int64_t width = cache.width;
  const bool bf16 = wkv_b.dtype() == DType::kBF16;
  // Every row of the call: which rows belong to a sequence is device data.
  // Rows of none attend to nothing and come out zero (o_lat starts zeroed).
  const int64_t n = q.rows;
  if (n == 0) return;

  AttnParams p;
  SetAttentionWork(seqs.token_begin, seqs.num_tokens, seqs.context_len, seqs.block_tables,
                   seqs.max_blocks, seqs.num_seqs, seqs.max_tokens, heads, heads, p);
  ChooseSplits(p.num_items, seqs.max_context, sm_count_, p);
  p.dk = static_cast<int32_t>(width);
  p.dv = static_cast<int32_t>(lora);
  ScratchLayout layout;
  const size_t q_b_off = layout.Add<uint16_t>(bf16 ? n * heads * qk : 0);
  const size_t q_abs_off = layout.Add<float>(n * heads * width);
  const size_t o_lat_off = layout.Add<float>(n * heads * lora);
  const size_t o_b_off = layout.Add<uint16_t>(bf16 ? n * heads * lora : 0);
  const size_t po_off = layout.Add<float>(PartialOutFloats(p));
  const size_t pml_off = layout.Add<float>(PartialMlFloats(p));
  void* base = scratch_.Reserve(layout.bytes());

  // 1. The queries, [n, heads * qk].
  const ConstMatView qv = q;
  float* q_abs = At<float>(base, q_abs_off);
  float* o_lat = At<float>(base, o_lat_off);
  ZeroRows(MatView{o_lat, n, heads * lora, heads * lora});

  // 2. q_abs[:, h, 0:lora] = q_nope_h W_k_h, W_k_h = wkv_b rows [h (nope + v), + nope).
  MatmulArgs qa;
  qa.m = lora;
  qa.n = n;
  qa.k = nope;
  qa.a = wkv_b.raw();
  qa.a_type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  qa.lda = lora;
  qa.stride_a = (nope + vd) * lora;
  if (bf16) {
    auto* q_b = At<uint16_t>(base, q_b_off);
    LaunchToBf16(qv.data, qv.stride, n, heads * qk, q_b, heads * qk, stream_);
    qa.b = q_b;
    qa.b_type = CUDA_R_16BF;
    qa.ldb = heads * qk;
  } else {
    qa.b = qv.data;
    qa.ldb = std::max<int64_t>(qv.stride, heads * qk);
  }
  qa.stride_b = qk;
  qa.d = q_abs;
  qa.ldd = heads * width;
  qa.stride_d = width;
  qa.batch = heads;
  if (nope > 0) {
    gemm_->Matmul(qa, "mla absorbed q_nope x W_k");
  } else {
    MOESERVE_CUDA_CHECK(
        cudaMemsetAsync(q_abs, 0, static_cast<size_t>(n * heads * width) * 4, stream_));
  }
  // 3. q_abs[:, h, lora:] = q_pe.
  LaunchCopyHeads(qv.data + nope, qv.stride, qk, q_abs + lora, heads * width, width, n, heads, rope,
                  stream_);

  // 4. Attention over the latent: all heads share KV head 0.
  p.q = q_abs;
  p.q_token_stride = heads * width;
  p.q_head_stride = width;
  p.out = o_lat;
  p.out_token_stride = heads * lora;
  p.out_head_stride = lora;
  p.kv = static_cast<const uint8_t*>(cache.data);
  p.kv_row = ToDevice(cache.layout());
  p.block_size = cache.block_size;
  p.v_in_k = 0;
  p.scale = shape.softmax_scale;
  p.partial_out = At<float>(base, po_off);
  p.partial_ml = At<float>(base, pml_off);
  LaunchPagedAttention(p, stream_);

  // 5. out[:, h] = o_lat_h W_v_h^T, W_v_h = wkv_b rows [h (nope + v) + nope, + v).
  MatmulArgs oa;
  oa.trans_a = true;
  oa.m = vd;
  oa.n = n;
  oa.k = lora;
  oa.a = WeightAt(wkv_b, nope * lora);
  oa.a_type = qa.a_type;
  oa.lda = lora;
  oa.stride_a = (nope + vd) * lora;
  if (bf16) {
    auto* o_b = At<uint16_t>(base, o_b_off);
    LaunchToBf16(o_lat, lora, n * heads, lora, o_b, lora, stream_);
    oa.b = o_b;
    oa.b_type = CUDA_R_16BF;
  } else {
    oa.b = o_lat;
  }
  oa.ldb = heads * lora;
  oa.stride_b = lora;
  oa.d = out.data;
  oa.ldd = std::max<int64_t>(out.stride, heads * vd);
  oa.stride_d = vd;
  oa.batch = heads;
  gemm_->Matmul(oa, "mla absorbed o_lat x W_v^T");
}

void CudaOps::MlaAttentionPrefill(ConstMatView q, const Tensor& wkv_b, const PagedCacheView& cache,
                                  const SeqTable& seqs, std::span<const SeqSlice> host,
                                  const MlaShape& shape, MatView out) {
  RequireMla(q, wkv_b, cache, shape, out);
  RequireTable(seqs, q.rows, cache);
  // The decompressed context is sized on the host, from the host slices
  // (the same sequences as the table's): this form is never captured.
  for (const SeqSlice& s : host) RequireSeq(s, q.rows, cache);
  for (const SeqSlice& s : host) {
    if (s.num_tokens > 0) MlaPrefillOne(q, wkv_b, cache, s, shape, out);
  }
}

void CudaOps::MlaPrefillOne(ConstMatView q, const Tensor& wkv_b, const PagedCacheView& cache,
                            const SeqSlice& seq, const MlaShape& shape, MatView out) {
  const int64_t heads = shape.heads, nope = shape.qk_nope_head_dim, rope = shape.qk_rope_head_dim;
  const int64_t vd = shape.v_head_dim, lora = shape.kv_lora_rank, qk = nope + rope;
  const int64_t width = cache.width, ctx = seq.context_len, n = seq.num_tokens;
  const int64_t kvw = nope + rope + vd;  // one head's decompressed [k_nope | k_pe | v]
  const bool bf16 = wkv_b.dtype() == DType::kBF16;
  const int64_t chunk =
      std::clamp<int64_t>(kPrefillKvBudgetBytes / (ctx * kvw * int64_t{4}), 1, heads);

  // Metadata: the cache row of each context position, then one sequence
  // over the decompressed buffer (a single "block" of ctx rows) and its items
  // for a full head chunk and for the last, shorter one.
  std::vector<int32_t> ctx_rows(static_cast<size_t>(ctx));
  for (int64_t p = 0; p < ctx; ++p) {
    const int32_t block = seq.block_table[static_cast<size_t>(p / cache.block_size)];
    ctx_rows[static_cast<size_t>(p)] =
        static_cast<int32_t>(block * cache.block_size + p % cache.block_size);
  }
  // One sequence over the decompressed buffer, a single "block" of ctx rows:
  // token_begin, num_tokens, context_len and its block table {0}.
  const std::vector<int32_t> one_seq = {0, static_cast<int32_t>(n), static_cast<int32_t>(ctx), 0};
  HostPack pack;
  const size_t rows_off = pack.Put(ctx_rows);
  const size_t seq_off = pack.Put(one_seq);
  const void* device_meta = Upload(pack.bytes(), prefill_meta_);
  const int32_t* one = DeviceAt<int32_t>(device_meta, seq_off);

  const int64_t last_heads = heads - (heads - 1) / chunk * chunk;
  AttnParams p;
  SetAttentionWork(one, one + 1, one + 2, one + 3, 1, 1, n, chunk, 1, p);
  ChooseSplits(p.num_items, ctx, sm_count_, p);
  AttnParams p_last = p;
  SetAttentionWork(one, one + 1, one + 2, one + 3, 1, 1, n, last_heads, 1, p_last);
  ChooseSplits(p_last.num_items, ctx, sm_count_, p_last);
  p.dk = p_last.dk = static_cast<int32_t>(qk);
  p.dv = p_last.dv = static_cast<int32_t>(vd);
  const int64_t lat_ld = RoundUp(lora, 8);
  ScratchLayout layout;
  const size_t ctx_off = layout.Add<float>(ctx * width);
  const size_t lat_b_off = layout.Add<uint16_t>(bf16 ? ctx * lat_ld : 0);
  const size_t kv_off = layout.Add<float>(ctx * chunk * kvw);
  const size_t po_off = layout.Add<float>(std::max(PartialOutFloats(p), PartialOutFloats(p_last)));
  const size_t pml_off = layout.Add<float>(std::max(PartialMlFloats(p), PartialMlFloats(p_last)));
  void* base = scratch_.Reserve(layout.bytes());
  float* ctx_buf = At<float>(base, ctx_off);
  float* kv = At<float>(base, kv_off);

  // The context rows [latent | k_pe], [ctx, width], read back as float32.
  if (cache.dtype == KvCacheDtype::kF32) {
    LaunchGatherRows(static_cast<const float*>(cache.data), width,
                     cache.num_blocks * cache.block_size, width,
                     DeviceAt<int32_t>(device_meta, rows_off), ctx, ctx_buf, width, false,
                     error_word_.get(), stream_);
  } else {
    LaunchKvGatherRows(static_cast<const uint8_t*>(cache.data), ToDevice(cache.layout()),
                       DeviceAt<int32_t>(device_meta, rows_off), ctx, ctx_buf, width, stream_);
  }
  MatmulArgs dec;  // [k_nope or v of head h] = latent W^T
  dec.trans_a = true;
  dec.n = ctx;
  dec.k = lora;
  dec.a_type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  dec.lda = lora;
  dec.stride_a = (nope + vd) * lora;
  if (bf16) {
    auto* lat_b = At<uint16_t>(base, lat_b_off);
    LaunchToBf16(ctx_buf, width, ctx, lora, lat_b, lat_ld, stream_);
    dec.b = lat_b;
    dec.b_type = CUDA_R_16BF;
    dec.ldb = lat_ld;
  } else {
    dec.b = ctx_buf;
    dec.ldb = width;
  }
  dec.ldd = chunk * kvw;
  dec.stride_d = kvw;

  for (int64_t h0 = 0; h0 < heads; h0 += chunk) {
    const int64_t hn = std::min(chunk, heads - h0);
    AttnParams& a = hn == chunk ? p : p_last;
    dec.batch = hn;
    if (nope > 0) {
      dec.m = nope;
      dec.a = WeightAt(wkv_b, h0 * (nope + vd) * lora);
      dec.d = kv;
      gemm_->Matmul(dec, "mla prefill latent x W_k^T");
    }
    dec.m = vd;
    dec.a = WeightAt(wkv_b, (h0 * (nope + vd) + nope) * lora);
    dec.d = kv + nope + rope;
    gemm_->Matmul(dec, "mla prefill latent x W_v^T");
    LaunchCopyHeads(ctx_buf + lora, width, 0, kv + nope, chunk * kvw, kvw, ctx, hn, rope, stream_);

    a.q = q.data + seq.token_begin * q.stride + h0 * qk;
    a.q_token_stride = q.stride;
    a.q_head_stride = qk;
    a.out = out.data + seq.token_begin * out.stride + h0 * vd;
    a.out_token_stride = out.stride;
    a.out_head_stride = vd;
    a.kv = reinterpret_cast<const uint8_t*>(kv);
    a.kv_row = F32Rows(chunk * kvw);
    a.block_size = ctx;
    a.k_offset = 0;
    a.k_head_stride = kvw;
    a.v_offset = nope + rope;
    a.v_head_stride = kvw;
    a.v_in_k = -1;
    a.scale = shape.softmax_scale;
    a.partial_out = At<float>(base, po_off);
    a.partial_ml = At<float>(base, pml_off);
    LaunchPagedAttention(a, stream_);
  }
}

}  // namespace moeserve::cuda
