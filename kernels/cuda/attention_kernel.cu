#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "kernels/cuda/attention_kernel.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernel_util.cuh"
#include "kernels/cuda/kv_cache_load.cuh"

namespace moeserve::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarp;
constexpr int kRowsPerWarp = kAttnRows / kWarps;  // 4
static_assert(kAttnTile == kWarp, "one tile position per lane");

// Floats per shared-memory row of queries and keys: a multiple of 4 (16-byte
// float4 reads) and 4 more than dk, so that the 8 lanes of a quarter warp
// reading 8 key rows hit distinct banks.
__host__ __device__ inline int KeyPitch(int dk) { return dk + 4; }

// Block x's item and its sequence's table; false when the item covers no
// token (past its sequence's new tokens, or a sequence with none).
__device__ inline bool ItemOf(const AttnParams& p, int64_t x, AttnItem& item, int32_t& num_tokens,
                              int32_t& context_len, const int32_t*& table) {
  const int32_t seq = static_cast<int32_t>(x / p.items_per_seq);
  int32_t rem = static_cast<int32_t>(x % p.items_per_seq);
  const int32_t tc = rem % p.token_chunks;
  rem /= p.token_chunks;
  const int32_t hc = rem % p.head_chunks;
  const int32_t kvh = rem / p.head_chunks;
  num_tokens = p.num_tokens[seq];
  const int32_t token = tc * p.tokens_per_item;
  const int32_t g0 = kvh * p.group;
  const int32_t head = g0 + hc * p.heads_per_item;
  if (token >= num_tokens || head >= g0 + p.group) return false;
  context_len = p.context_len[seq];
  table = p.block_tables + static_cast<int64_t>(seq) * p.table_stride;
  item.seq = seq;
  item.token = token;
  item.q_row = p.token_begin[seq] + token;
  item.num_tokens = static_cast<int16_t>(min(p.tokens_per_item, num_tokens - token));
  item.head = static_cast<int16_t>(head);
  item.num_heads = static_cast<int16_t>(min(p.heads_per_item, g0 + p.group - head));
  return true;
}

__device__ inline int64_t OutRowOffset(const AttnParams& p, const AttnItem& item, int r) {
  const int t = r / item.num_heads, h = item.head + r % item.num_heads;
  return static_cast<int64_t>(item.q_row + t) * p.out_token_stride +
         static_cast<int64_t>(h) * p.out_head_stride;
}

template <int kDvSlots>
__global__ void __launch_bounds__(kThreads) PagedAttentionKernel(AttnParams p) {
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  AttnItem item;
  int32_t seq_tokens = 0, seq_context = 0;
  const int32_t* table = nullptr;
  if (!ItemOf(p, blockIdx.x, item, seq_tokens, seq_context, table)) return;  // block-uniform
  const int rows = item.num_tokens * item.num_heads;
  const int dk = p.dk, dv = p.dv, kp = KeyPitch(dk);
  const bool v_separate = p.v_in_k < 0;
  float* q_s = smem;                  // [kAttnRows][kp]
  float* k_s = q_s + kAttnRows * kp;  // [kAttnTile][kp]
  float* v_s = v_separate ? k_s + kAttnTile * kp : k_s + p.v_in_k;
  const int vp = v_separate ? dv : kp;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int kvh = item.head / p.group;
  const int64_t first_pos = seq_context - seq_tokens;  // position of new token 0

  for (int r = warp; r < kAttnRows; r += kWarps) {
    float* dst = q_s + r * kp;
    if (r < rows) {
      const int t = r / item.num_heads, h = item.head + r % item.num_heads;
      const float* src = p.q + static_cast<int64_t>(item.q_row + t) * p.q_token_stride +
                         static_cast<int64_t>(h) * p.q_head_stride;
      for (int d = lane; d < dk; d += kWarp) dst[d] = src[d];
    } else {
      for (int d = lane; d < dk; d += kWarp) dst[d] = 0.0f;
    }
  }

  // This warp's rows and how far each may look.
  int64_t visible[kRowsPerWarp];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int r = warp * kRowsPerWarp + i;
    visible[i] = r < rows ? first_pos + item.token + r / item.num_heads + 1 : 0;
  }
  const int64_t block_visible = first_pos + item.token + item.num_tokens;
  const int64_t begin = static_cast<int64_t>(blockIdx.y) * p.split_tokens;
  const int64_t end = min(block_visible, begin + p.split_tokens);

  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kDvSlots];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int j = 0; j < kDvSlots; ++j) acc[i][j] = 0.0f;
  }

  for (int64_t t0 = begin; t0 < end; t0 += kAttnTile) {
    __syncthreads();  // the previous tile is consumed (and the queries are stored)
    for (int c = warp; c < kAttnTile; c += kWarps) {
      const int64_t pos = t0 + c;
      float* kd = k_s + c * kp;
      float* vd = v_s + c * vp;
      if (pos < end) {
        const int32_t block = table[pos / p.block_size];
        const uint8_t* row =
            p.kv +
            (static_cast<int64_t>(block) * p.block_size + pos % p.block_size) * p.kv_row.row_bytes;
        const int64_t kcol = p.k_offset + static_cast<int64_t>(kvh) * p.k_head_stride;
        for (int d = lane; d < dk; d += kWarp) kd[d] = LoadKv(p.kv_row, row, kcol + d);
        if (v_separate) {
          const int64_t vcol = p.v_offset + static_cast<int64_t>(kvh) * p.v_head_stride;
          for (int d = lane; d < dv; d += kWarp) vd[d] = LoadKv(p.kv_row, row, vcol + d);
        }
      } else {
        for (int d = lane; d < dk; d += kWarp) kd[d] = 0.0f;
        if (v_separate) {
          for (int d = lane; d < dv; d += kWarp) vd[d] = 0.0f;
        }
      }
    }
    __syncthreads();

    // Scores: lane c holds position t0 + c for each of the warp's rows.
    float s[kRowsPerWarp] = {};
    const float4* k4 = reinterpret_cast<const float4*>(k_s + lane * kp);
    for (int d4 = 0; d4 < dk / 4; ++d4) {
      const float4 kv = k4[d4];
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const float4 qv = reinterpret_cast<const float4*>(q_s + (warp * kRowsPerWarp + i) * kp)[d4];
        s[i] += qv.x * kv.x + qv.y * kv.y + qv.z * kv.z + qv.w * kv.w;
      }
    }
    const int64_t pos = t0 + lane;
    float prob[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const bool seen = pos < end && pos < visible[i];
      const float score = seen ? s[i] * p.scale : -INFINITY;
      const float new_m = fmaxf(m[i], WarpMax(score));  // warp-uniform
      if (new_m == -INFINITY) {                         // nothing visible yet for this row
        prob[i] = 0.0f;
        continue;
      }
      const float alpha = expf(m[i] - new_m);  // 0 on the first visible tile
      prob[i] = seen ? expf(score - new_m) : 0.0f;
      l[i] = l[i] * alpha + WarpSum(prob[i]);
      m[i] = new_m;
#pragma unroll
      for (int j = 0; j < kDvSlots; ++j) acc[i][j] *= alpha;
    }
    for (int c = 0; c < kAttnTile; ++c) {
      float pc[kRowsPerWarp];
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) pc[i] = __shfl_sync(0xffffffffu, prob[i], c);
      const float* vrow = v_s + c * vp;
#pragma unroll
      for (int j = 0; j < kDvSlots; ++j) {
        const int d = lane + j * kWarp;
        if (d < dv) {
          const float v = vrow[d];
#pragma unroll
          for (int i = 0; i < kRowsPerWarp; ++i) acc[i][j] += pc[i] * v;
        }
      }
    }
  }

#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int r = warp * kRowsPerWarp + i;
    if (r >= rows) continue;
    if (p.num_splits == 1) {
      float* o = p.out + OutRowOffset(p, item, r);
      const float inv = 1.0f / l[i];
#pragma unroll
      for (int j = 0; j < kDvSlots; ++j) {
        const int d = lane + j * kWarp;
        if (d < dv) o[d] = acc[i][j] * inv;
      }
    } else {
      const int64_t idx =
          (static_cast<int64_t>(blockIdx.x) * p.num_splits + blockIdx.y) * kAttnRows + r;
#pragma unroll
      for (int j = 0; j < kDvSlots; ++j) {
        const int d = lane + j * kWarp;
        if (d < dv) p.partial_out[idx * dv + d] = acc[i][j];
      }
      if (lane == 0) {
        p.partial_ml[2 * idx] = m[i];
        p.partial_ml[2 * idx + 1] = l[i];
      }
    }
  }
}

// Merges the splits of each row: out = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M).
__global__ void CombineSplitsKernel(AttnParams p) {
  AttnItem item;
  int32_t seq_tokens = 0, seq_context = 0;
  const int32_t* table = nullptr;
  if (!ItemOf(p, blockIdx.x, item, seq_tokens, seq_context, table)) return;
  const int rows = item.num_tokens * item.num_heads;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  for (int r = warp; r < rows; r += kWarps) {
    const int64_t base = static_cast<int64_t>(blockIdx.x) * p.num_splits * kAttnRows + r;
    float big = -INFINITY;
    for (int s = 0; s < p.num_splits; ++s)
      big = fmaxf(big, p.partial_ml[2 * (base + s * kAttnRows)]);
    float sum = 0.0f;
    for (int s = 0; s < p.num_splits; ++s) {
      const int64_t idx = base + s * kAttnRows;
      const float ms = p.partial_ml[2 * idx];
      if (ms != -INFINITY) sum += p.partial_ml[2 * idx + 1] * expf(ms - big);
    }
    float* o = p.out + OutRowOffset(p, item, r);
    for (int d = lane; d < p.dv; d += kWarp) {
      float v = 0.0f;
      for (int s = 0; s < p.num_splits; ++s) {
        const int64_t idx = base + s * kAttnRows;
        const float ms = p.partial_ml[2 * idx];
        if (ms != -INFINITY) v += p.partial_out[idx * p.dv + d] * expf(ms - big);
      }
      o[d] = v / sum;
    }
  }
}

__global__ void CopyHeadsKernel(const float* src, int64_t sts, int64_t shs, float* dst, int64_t dts,
                                int64_t dhs, int64_t tokens, int64_t heads, int64_t width) {
  const int64_t rows = tokens * heads;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t t = r / heads, h = r % heads;
    const float* s = src + t * sts + h * shs;
    float* d = dst + t * dts + h * dhs;
    for (int64_t c = threadIdx.x; c < width; c += blockDim.x) d[c] = s[c];
  }
}

size_t SharedBytes(const AttnParams& p) {
  const int kp = KeyPitch(p.dk);
  size_t floats = static_cast<size_t>(kAttnRows + kAttnTile) * kp;
  if (p.v_in_k < 0) floats += static_cast<size_t>(kAttnTile) * p.dv;
  return floats * sizeof(float);
}

template <int kDvSlots>
void Launch(const AttnParams& p, cudaStream_t stream) {
  const size_t bytes = SharedBytes(p);
  static size_t configured = 48 << 10;  // per instantiation: the default dynamic limit
  if (bytes > configured) {
    MOESERVE_CUDA_CHECK(cudaFuncSetAttribute(PagedAttentionKernel<kDvSlots>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(bytes)));
    configured = bytes;
  }
  const dim3 grid(static_cast<unsigned>(p.num_items), static_cast<unsigned>(p.num_splits));
  PagedAttentionKernel<kDvSlots><<<grid, kThreads, bytes, stream>>>(p);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace

void SetAttentionWork(const int32_t* token_begin, const int32_t* num_tokens,
                      const int32_t* context_len, const int32_t* block_tables, int64_t stride,
                      int64_t num_seqs, int64_t max_tokens, int64_t heads, int64_t group,
                      AttnParams& p) {
  Require(heads > 0 && group > 0 && heads % group == 0, "attention: heads must be groups of KV heads");
  p.token_begin = token_begin;
  p.num_tokens = num_tokens;
  p.context_len = context_len;
  p.block_tables = block_tables;
  p.table_stride = stride;
  p.group = static_cast<int32_t>(group);
  const int64_t heads_per_item = std::min<int64_t>(group, kAttnRows);
  const int64_t tokens_per_item = std::max<int64_t>(1, kAttnRows / heads_per_item);
  p.heads_per_item = static_cast<int32_t>(heads_per_item);
  p.tokens_per_item = static_cast<int32_t>(tokens_per_item);
  p.head_chunks = static_cast<int32_t>((group + heads_per_item - 1) / heads_per_item);
  p.token_chunks =
      static_cast<int32_t>(std::max<int64_t>(1, (max_tokens + tokens_per_item - 1) / tokens_per_item));
  const int64_t per_seq = (heads / group) * p.head_chunks * p.token_chunks;
  const int64_t items = max_tokens > 0 ? num_seqs * per_seq : 0;
  Require(items < (int64_t{1} << 31), "attention: too many work items in one call");
  p.items_per_seq = static_cast<int32_t>(per_seq);
  p.num_items = static_cast<int32_t>(items);
}

void ChooseSplits(int64_t num_items, int64_t max_context, int sm_count, AttnParams& params) {
  constexpr int64_t kMinSplitTokens = 256;
  int64_t splits = 1;
  if (num_items > 0 && num_items < 2 * sm_count) {
    splits = std::min<int64_t>({(2 * sm_count + num_items - 1) / num_items,
                                std::max<int64_t>(1, max_context / kMinSplitTokens), 64});
  }
  const int64_t per_split = (max_context + splits - 1) / std::max<int64_t>(splits, 1);
  params.split_tokens =
      std::max<int64_t>(kAttnTile, (per_split + kAttnTile - 1) / kAttnTile * kAttnTile);
  params.num_splits = static_cast<int32_t>(
      std::max<int64_t>(1, (max_context + params.split_tokens - 1) / params.split_tokens));
}

int64_t PartialOutFloats(const AttnParams& p) {
  return p.num_splits > 1 ? static_cast<int64_t>(p.num_items) * p.num_splits * kAttnRows * p.dv : 0;
}

int64_t PartialMlFloats(const AttnParams& p) {
  return p.num_splits > 1 ? static_cast<int64_t>(p.num_items) * p.num_splits * kAttnRows * 2 : 0;
}

void LaunchPagedAttention(const AttnParams& p, cudaStream_t stream) {
  if (p.num_items == 0) return;
  Require(p.dk % 4 == 0 && p.dv % 4 == 0 && p.dk > 0 && p.dv > 0 && p.dk <= 1024,
          "attention: head dims must be positive multiples of 4, dk <= 1024");
  Require(p.v_in_k < 0 || p.v_in_k + p.dv <= p.dk, "attention: values outside the keys");
  if (p.dv <= 64) {
    Launch<2>(p, stream);
  } else if (p.dv <= 128) {
    Launch<4>(p, stream);
  } else if (p.dv <= 256) {
    Launch<8>(p, stream);
  } else {
    Require(p.dv <= 512, "attention: dv must be <= 512");
    Launch<16>(p, stream);
  }
  if (p.num_splits > 1) {
    CombineSplitsKernel<<<static_cast<unsigned>(p.num_items), kThreads, 0, stream>>>(p);
    MOESERVE_CUDA_CHECK_LAUNCH();
  }
}

void LaunchCopyHeads(const float* src, int64_t src_token_stride, int64_t src_head_stride,
                     float* dst, int64_t dst_token_stride, int64_t dst_head_stride, int64_t tokens,
                     int64_t heads, int64_t width, cudaStream_t stream) {
  if (tokens == 0 || heads == 0 || width == 0) return;
  CopyHeadsKernel<<<GridFor(tokens * heads, 1), 64, 0, stream>>>(
      src, src_token_stride, src_head_stride, dst, dst_token_stride, dst_head_stride, tokens, heads,
      width);
  MOESERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace moeserve::cuda
