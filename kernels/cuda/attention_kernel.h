// The paged attention kernel shared by MLA (both forms) and GQA.
//
// A thread block owns up to 32 query rows that read the same keys and values:
// (tokens x heads) of one sequence whose heads map to one KV head. It walks
// the sequence's visible context in tiles of 32 positions, keeps each tile
// of keys (and values) in shared memory, and runs an online softmax (running
// maximum and sum) per row, so any context length fits. Decode tiles heads
// (MLA: 32 of the 128 heads of a token share the latent), prefill tiles
// tokens. Long contexts with few blocks are split across blocks (flash-
// decoding) and merged by a second kernel.
//
// Float32 arithmetic on CUDA cores: the CPU twin's function, not its
// summation order. This is the correctness-first version; the tensor-core
// version (bf16 wgmma, FlashMLA-style) is the next step (docs/gpu.md).
#ifndef MOESERVE_KERNELS_CUDA_ATTENTION_KERNEL_H_
#define MOESERVE_KERNELS_CUDA_ATTENTION_KERNEL_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/kv_cache.h"

namespace moeserve::cuda {

inline constexpr int kAttnRows = 32;  // query rows per block
inline constexpr int kAttnTile = 32;  // context positions per tile

// One thread block's rows: tokens [token, token + num_tokens) of sequence
// `seq` (row index q_row + t in the q and out arrays) times heads [head,
// head + num_heads), num_tokens * num_heads <= kAttnRows. Derived in the
// kernel from the block index and the sequence table (AttnParams), so that
// nothing about a step's sequences is planned on the host.
struct AttnItem {
  int32_t seq;
  int32_t q_row;
  int32_t token;
  int16_t num_tokens;
  int16_t head;
  int16_t num_heads;
  int16_t unused;
};

struct AttnParams {
  // Query row (token t, head h): q + t * q_token_stride + h * q_head_stride, dk floats.
  const float* q = nullptr;
  int64_t q_token_stride = 0, q_head_stride = 0;
  // Output row likewise, dv floats.
  float* out = nullptr;
  int64_t out_token_stride = 0, out_head_stride = 0;
  // Paged rows in the layout `kv_row` (kv_cache.h: float32, bf16 or FP8,
  // dequantized on load); position p of a sequence lives in block
  // table[p / block_size], slot p % block_size. Head h reads KV head
  // h / group: keys at column k_offset + kvh * k_head_stride (dk values),
  // values at column v_offset + kvh * v_head_stride (dv values).
  const uint8_t* kv = nullptr;
  KvRowDevice kv_row;
  int64_t block_size = 0;
  int64_t k_offset = 0, k_head_stride = 0;
  int64_t v_offset = 0, v_head_stride = 0;
  int32_t group = 1;
  int32_t dk = 0, dv = 0;
  // When the values are columns [v_in_k, v_in_k + dv) of the keys (MLA's
  // absorbed form), the key tile doubles as the value tile; else -1.
  int32_t v_in_k = -1;
  float scale = 1.0f;
  // The sequences: a SeqTable's arrays (kernels/seq_table.h). Sequence i's
  // new token j is q row token_begin[i] + j, at position context_len[i] -
  // num_tokens[i] + j; its block table starts at block_tables + i * stride.
  const int32_t* token_begin = nullptr;
  const int32_t* num_tokens = nullptr;
  const int32_t* context_len = nullptr;
  const int32_t* block_tables = nullptr;
  int64_t table_stride = 0;
  // The work: block x takes item x % items_per_seq of sequence x /
  // items_per_seq, that item being (KV head, head chunk, token chunk) in
  // that order of significance. Items past a sequence's tokens do nothing.
  int32_t num_items = 0;  // num_seqs * items_per_seq
  int32_t items_per_seq = 0;
  int32_t heads_per_item = 0, tokens_per_item = 0;
  int32_t head_chunks = 0, token_chunks = 0;
  // Context split: block (item, s) covers positions [s * split_tokens, ...).
  int32_t num_splits = 1;
  int64_t split_tokens = 0;
  float* partial_out = nullptr;  // [items][splits][kAttnRows][dv], when num_splits > 1
  float* partial_ml = nullptr;   // [items][splits][kAttnRows][2]: running max and sum
};

// Sets the table and the item decomposition of `params` for `num_seqs`
// sequences of at most `max_tokens` new tokens each, `heads` query heads in
// groups of `group` per KV head.
void SetAttentionWork(const int32_t* token_begin, const int32_t* num_tokens,
                      const int32_t* context_len, const int32_t* block_tables, int64_t stride,
                      int64_t num_seqs, int64_t max_tokens, int64_t heads, int64_t group,
                      AttnParams& params);

// Splits per item for `num_items` items over contexts up to `max_context`,
// enough blocks to fill `sm_count` multiprocessors twice; sets num_splits
// and split_tokens.
void ChooseSplits(int64_t num_items, int64_t max_context, int sm_count, AttnParams& params);

// Floats of partial buffers the launch needs (0 without splits).
int64_t PartialOutFloats(const AttnParams& params);
int64_t PartialMlFloats(const AttnParams& params);

// Requires dk and dv multiples of 4, dv <= 512, dk <= 1024.
void LaunchPagedAttention(const AttnParams& params, cudaStream_t stream);

// dst[t, h, 0:width] = src[t, h, 0:width] for t < tokens, h < heads, rows
// addressed by token and head strides (a head stride of 0 broadcasts one
// source row to every head): MLA's rope parts of queries and keys.
void LaunchCopyHeads(const float* src, int64_t src_token_stride, int64_t src_head_stride,
                     float* dst, int64_t dst_token_stride, int64_t dst_head_stride, int64_t tokens,
                     int64_t heads, int64_t width, cudaStream_t stream);

}  // namespace moeserve::cuda

#endif  // MOESERVE_KERNELS_CUDA_ATTENTION_KERNEL_H_
