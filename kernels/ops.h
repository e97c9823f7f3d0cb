// The op set: every numerical operation a model performs, behind one
// interface with one implementation per device (kernels/cpu/ is the
// reference; kernels/cuda/ gives every op a twin with the same signature).
// Model code calls ops only through this interface and never branches on the
// device.
//
// Conventions, for every op:
//  - Activations are float32 row-major matrices passed as (Const)MatView; a
//    view may be a column slice of a wider buffer (row stride > cols).
//  - Weights are Tensors in the layout of the checkpoint ([out, in] for
//    linear layers), already converted to the backend's compute dtype (F32 on
//    the CPU backend).
//  - Output views must not alias inputs unless the op says "in place allowed".
//  - Memory: an implementation reads and writes its own device's memory. The
//    CPU op set takes host memory; the CUDA op set (kernels/cuda/cuda_ops.h)
//    device memory for every tensor, view and span of numbers, and the
//    arrays of a SeqTable (kernels/seq_table.h), while the descriptor
//    arguments (SamplingParams, RopeTable, RoutingParams itself, a SeqTable's
//    bounds) stay on the host.
//  - Replay: every op but Sample and MlaAttentionPrefill reads nothing from
//    the host when it runs, so a step captured into a Graph replays correctly
//    over new contents of its buffers (ids, positions, sequence tables, block
//    tables).
//  - Shapes are the caller's contract; implementations assert them.
//
// Thread safety: an Ops object may be used by one thread at a time.
#ifndef MOESERVE_KERNELS_OPS_H_
#define MOESERVE_KERNELS_OPS_H_

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/kv_cache_layout.h"
#include "kernels/seq_table.h"
#include "kernels/tensor.h"

namespace moeserve {

// ---------------------------------------------------------------------------
// Rotary position embedding.

enum class RopeStyle {
  kInterleaved,  // pairs (x[2i], x[2i+1]) rotate together: DeepSeek's reference
  kRotateHalf,   // pairs (x[i], x[i + d/2]) rotate together: Hugging Face Llama/Qwen
};

struct RopeParams {
  int64_t rotary_dim = 0;  // even; the number of dimensions that rotate
  double theta = 10000.0;  // rope_theta
  // YaRN (rope_scaling.type == "yarn"); disabled when factor <= 1.
  bool yarn = false;
  double factor = 1.0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
  int64_t original_max_position_embeddings = 4096;
};

// Per-dimension-pair inverse frequencies (YaRN-corrected) and the factor that
// multiplies cos/sin. Computed once per model, on the host, in float32 as
// DeepSeek's reference does.
struct RopeTable {
  RopeStyle style = RopeStyle::kInterleaved;
  std::vector<float> inv_freq;  // rotary_dim / 2 entries
  float attention_factor = 1.0f;
};
RopeTable MakeRopeTable(const RopeParams& params, RopeStyle style);

// YaRN's attention-logit correction: 0.1 * mscale * ln(factor) + 1 for
// factor > 1, else 1. DeepSeek multiplies the softmax scale by
// YarnMscale(factor, mscale_all_dim)^2.
double YarnMscale(double factor, double mscale);

// ---------------------------------------------------------------------------
// Paged KV cache and ragged batches.

// One layer's cache: fixed-size blocks of `block_size` token rows, each row
// `width` logical float values stored in `row_bytes()` bytes by the row
// layout of kernels/kv_cache_layout.h (dtype, and for FP8 which leading
// columns are quantized in tiles of how many values). Token slot s of block b
// lives at
//   data + (b * block_size + s) * row_bytes() bytes.
// CacheWrite stores rows in this layout; the attention ops read them back as
// float32 (DequantizeKvRow's values), so their math is the same for every
// dtype. The default layout is float32 (data may then point at floats).
struct PagedCacheView {
  void* data = nullptr;
  int64_t num_blocks = 0;
  int64_t block_size = 0;  // tokens per block
  int64_t width = 0;       // logical floats per token
  KvCacheDtype dtype = KvCacheDtype::kF32;
  int64_t quantized_cols = 0;  // FP8 only: leading columns stored as e4m3
  int64_t quant_tile = 0;      // FP8 only: values per float32 scale

  KvRowLayout layout() const { return {dtype, width, quantized_cols, quant_tile}; }
  int64_t row_bytes() const { return layout().row_bytes(); }
  uint8_t* token(int32_t block, int64_t slot) const {
    return static_cast<uint8_t*>(data) +
           (static_cast<int64_t>(block) * block_size + slot) * row_bytes();
  }
};

// One sequence's share of a ragged batch, on the host (HostSeqTable::Build
// turns a batch of them into the SeqTable the ops read). Its `num_tokens` new tokens occupy
// rows [token_begin, token_begin + num_tokens) of the batch activations and
// positions [context_len - num_tokens, context_len) of the sequence. After the
// cache write, cache positions [0, context_len) hold this sequence's keys.
struct SeqSlice {
  int64_t token_begin = 0;
  int64_t num_tokens = 0;
  int64_t context_len = 0;
  std::span<const int32_t> block_table;  // block ids in position order
};

// ---------------------------------------------------------------------------
// Routing and sampling parameters.

enum class ScoringFunc { kSigmoid, kSoftmax };

struct RoutingParams {
  ScoringFunc scoring = ScoringFunc::kSoftmax;
  const float* correction_bias = nullptr;  // [num_experts] or null (selection only)
  int64_t num_experts = 0;
  int64_t top_k = 0;
  int64_t n_group = 1;     // group-limited routing: experts split into n_group groups
  int64_t topk_group = 1;  // ... of which the best topk_group stay eligible
  bool norm_topk_prob = false;
  float routed_scaling_factor = 1.0f;
};

// Where the replicas of each logical expert live, for MoeDispatchLayout.
// The arrays are backend memory; the sizes are host values. Global slot g is
// local slot g % slots_per_rank of rank g / slots_per_rank.
struct MoeSlotTable {
  const int32_t* replica_slots = nullptr;   // [num_experts * max_replicas]: expert e's
                                            // replicas at [e * max_replicas, + count)
  const int32_t* replica_counts = nullptr;  // [num_experts], each >= 1
  int64_t num_experts = 0;
  int64_t max_replicas = 0;
  int64_t ranks = 0;
  int64_t slots_per_rank = 0;
  int64_t slots() const { return ranks * slots_per_rank; }
};

// One local expert's weights for GroupedGatedFfn; null pointers for an
// expert a weight selection left out (its rows come out zero).
struct ExpertFfnWeights {
  const Tensor* gate = nullptr;
  const Tensor* up = nullptr;
  const Tensor* down = nullptr;
};

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy
  int32_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // 1: off
  float min_p = 0.0f;        // 0: off
  uint64_t seed = 0;
};

// ---------------------------------------------------------------------------

class Ops {
 public:
  virtual ~Ops() = default;

  // out[t] = table[ids[t]]. table: [vocab, hidden]; ids must be < vocab.
  virtual void Embedding(const Tensor& table, std::span<const int32_t> ids, MatView out) = 0;

  // out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight. weight: [x.cols].
  // In place allowed.
  virtual void RmsNorm(ConstMatView x, const Tensor& weight, float eps, MatView out) = 0;

  // y = x * w^T. w: [y.cols, x.cols].
  virtual void Linear(ConstMatView x, const Tensor& w, MatView y) = 0;

  // y += x, elementwise.
  virtual void Add(ConstMatView x, MatView y) = 0;

  // Rotates x in place. x has rows = tokens * heads_per_token (row r belongs
  // to token r / heads_per_token) and cols = rotary_dim.
  virtual void Rope(MatView x, int64_t heads_per_token, std::span<const int32_t> positions,
                    const RopeTable& table) = 0;

  // Stores row r of `values` (one per batch token, width = cache.width) in
  // cache slot seqs.slots[r] (rows of slot -1 are skipped), in the cache's
  // dtype (quantizing as kernels/kv_cache_layout.h says).
  virtual void CacheWrite(ConstMatView values, const SeqTable& seqs,
                          const PagedCacheView& cache) = 0;

  // Multi-head latent attention (DeepSeek-V3) over the compressed cache.
  // q: [T, heads * (nope + rope)] with rope already applied to the rope part
  // of each head. cache rows: [kv_lora_rank normalized latent | rope key].
  // wkv_b: [heads * (nope + v_head_dim), kv_lora_rank]. out: [T, heads * v].
  // Causal within each sequence. The absorbed form writes rows of no
  // sequence as zero (so a step's padding stays finite); the prefill form
  // leaves them as they are (so it can follow the absorbed form over the
  // other sequences of a batch). The two forms compute the same function:
  //  - Prefill form decompresses the context's latents into per-head keys and
  //    values with wkv_b (cheaper for long chunks).
  //  - Absorbed form folds wkv_b into the query and the output and attends
  //    over the 576-wide latent directly (cheaper for decode).
  struct MlaShape {
    int64_t heads = 0;
    int64_t qk_nope_head_dim = 0;
    int64_t qk_rope_head_dim = 0;
    int64_t v_head_dim = 0;
    int64_t kv_lora_rank = 0;
    float softmax_scale = 0.0f;
  };
  // The prefill form sizes its decompressed context on the host: it takes
  // the same sequences as `host` slices too, and is never captured.
  virtual void MlaAttentionPrefill(ConstMatView q, const Tensor& wkv_b, const PagedCacheView& cache,
                                   const SeqTable& seqs, std::span<const SeqSlice> host,
                                   const MlaShape& shape, MatView out) = 0;
  virtual void MlaAttentionAbsorbed(ConstMatView q, const Tensor& wkv_b,
                                    const PagedCacheView& cache, const SeqTable& seqs,
                                    const MlaShape& shape, MatView out) = 0;

  // Grouped-query attention. q: [T, q_heads * head_dim]; cache rows:
  // [kv_heads * head_dim keys | kv_heads * head_dim values]; query head h reads
  // kv head h / (q_heads / kv_heads). out: [T, q_heads * head_dim]. Causal;
  // rows of no sequence come out zero.
  struct GqaShape {
    int64_t q_heads = 0;
    int64_t kv_heads = 0;
    int64_t head_dim = 0;
    float softmax_scale = 0.0f;
  };
  virtual void GqaAttention(ConstMatView q, const PagedCacheView& cache, const SeqTable& seqs,
                            const GqaShape& shape, MatView out) = 0;

  // Chooses top_k experts per token from router logits [T, num_experts].
  // expert_ids and weights: T * top_k entries, token-major, weights as the MoE
  // block applies them (normalized if asked, times routed_scaling_factor).
  virtual void RouteTopK(ConstMatView logits, const RoutingParams& params,
                         std::span<int32_t> expert_ids, std::span<float> weights) = 0;

  // SiLU-gated feed-forward: out = (silu(x gate^T) * (x up^T)) down^T.
  // gate, up: [inter, hidden]; down: [hidden, inter]; out: [T, hidden].
  virtual void GatedFfn(ConstMatView x, const Tensor& gate, const Tensor& up, const Tensor& down,
                        MatView out) = 0;

  // out[i] = x[rows[i]].
  virtual void GatherRows(ConstMatView x, std::span<const int32_t> rows, MatView out) = 0;
  // y[rows[i]] += weights[i] * x[i].
  virtual void ScatterAddRows(ConstMatView x, std::span<const int32_t> rows,
                              std::span<const float> weights, MatView y) = 0;

  // ---- The MoE block in fixed-capacity buffers (DeepEP's low-latency
  // layout): every count lives in backend memory, so a step makes no
  // device-to-host round trip per layer and the same buffers serve every
  // step (graph capture). A buffer of `slots` groups of `capacity` rows holds
  // group g's rows at [g * capacity, g * capacity + counts[g]); rows past the
  // count are never read.

  // Packs a micro-batch's (token, expert) pairs for the dispatch. x: [T,
  // hidden]; expert_ids: [T * top_k], token-major. Pair p of expert e goes to
  // replica (rank + k) % replica_counts[e] of e, where k counts the pairs of
  // e before p: the replicas take an expert's pairs in turn. send: [slots *
  // capacity, hidden] gets x of each pair's token in its slot's group, in
  // pair order; send_counts: [slots]; pair_rows[p]: the send row of pair p;
  // expert_load[e] += the pairs routed to e (accumulates over calls).
  // capacity >= T (a slot holds one expert and a token picks it at most once).
  // tokens_in_use: empty, or one count in backend memory: the pairs of
  // tokens at or past it (a batch-size bucket's padding) are not dispatched,
  // counted in no load, and get pair_rows -1.
  virtual void MoeDispatchLayout(ConstMatView x, std::span<const int32_t> expert_ids, int64_t top_k,
                                 const MoeSlotTable& table, int32_t rank, int64_t capacity,
                                 MatView send, std::span<int32_t> send_counts,
                                 std::span<int32_t> pair_rows, std::span<int64_t> expert_load,
                                 std::span<const int32_t> tokens_in_use) = 0;

  // The local experts over the rows a dispatch received, in one launch. x and
  // out: [sources * experts.size() * capacity, hidden], group (r, s) at
  // r * experts.size() + s holding counts[that] rows from source rank r for
  // local slot s. Each expert sees its rows in source order (as if gathered
  // into one matrix) and its outputs land in the same rows of out.
  virtual void GroupedGatedFfn(ConstMatView x, std::span<const int32_t> counts, int64_t sources,
                               int64_t capacity, std::span<const ExpertFfnWeights> experts,
                               MatView out) = 0;

  // out[t] = shared[t] (zero when shared has no rows), then for each of token
  // t's top_k pairs in ascending expert id (ties in pair order), out[t] +=
  // gains[p] * combined[pair_rows[p]], one pair at a time: the same float sum
  // whatever the placement, replicas or micro-batching. Pairs of row -1 (not
  // dispatched) add nothing.
  virtual void MoeCombineReduce(ConstMatView combined, std::span<const int32_t> pair_rows,
                                std::span<const int32_t> expert_ids, std::span<const float> gains,
                                int64_t top_k, ConstMatView shared, MatView out) = 0;

  // out = log_softmax(x) per row. In place allowed.
  virtual void LogSoftmax(ConstMatView x, MatView out) = 0;

  // Samples one token per row of logits [N, vocab]. Deterministic given
  // (params[i].seed, draw_index[i]): the same request draws the same token
  // whatever else is in the batch. logprobs[i] is the log-probability of the
  // chosen token under the unmodified model distribution (log_softmax of the
  // logits, before temperature and filters).
  virtual void Sample(ConstMatView logits, std::span<const SamplingParams> params,
                      std::span<const uint64_t> draw_index, std::span<int32_t> token_ids,
                      std::span<float> logprobs) = 0;
};

// Weight conversion to the CPU compute dtype (float32).
// Dequantizes an FP8 e4m3 [rows, cols] weight with DeepSeek block scales:
// w[r, c] = q[r, c] * scale_inv[r / block, c / block], scale_inv:
// [ceil(rows / block), ceil(cols / block)] float32 (partial edge blocks).
void DequantizeFp8Blocks(const uint8_t* q, int64_t rows, int64_t cols, const float* scale_inv,
                         int64_t block, float* out);
// Dequantizes an FP4 e2m1 [rows, cols] weight packed two codes per byte
// along a row (low nibble first, `packed` is [rows, cols / 2] bytes; cols
// even) with one scale per `block` inputs: w[r, c] = code[r, c] *
// scale[r, c / block], scale: [rows, ceil(cols / block)] float32.
void DequantizeFp4Blocks(const uint8_t* packed, int64_t rows, int64_t cols, const float* scale,
                         int64_t block, float* out);
void ConvertBf16ToF32(const uint16_t* in, int64_t n, float* out);

}  // namespace moeserve

#endif  // MOESERVE_KERNELS_OPS_H_
