// The CUDA op set: every op of kernels/ops.h on an NVIDIA GPU (built and
// tuned for Hopper, sm_90), each tested against its CPU twin
// (tests/kernels/cuda/).
//
// Memory. Every address an op takes is device memory of this op set's
// device: the data of every MatView / ConstMatView, every Tensor (make them
// with kernels/cuda/device_tensor.h), PagedCacheView::data,
// RoutingParams::correction_bias, and the spans of numbers (token ids,
// positions, row lists and row weights, routing expert ids and weights,
// sampling's draw_index, token_ids and logprobs), and a SeqTable's arrays.
// Host memory: the descriptors (a SeqTable's bounds, the prefill form's host
// slices, the SamplingParams span, RopeTable, RoutingParams itself, shapes).
// Host descriptors are uploaded per call; an upload whose bytes equal the
// previous one of the same kind is skipped.
//
// Execution. Ops queue work on one CUDA stream and return without waiting,
// except PermuteByExpert (it reads group sizes back to size the GEMMs).
// Results are complete after Synchronize(). The stream is the op set's own
// blocking stream, so the synchronous copies of device_tensor.h also wait for
// queued ops; or, with Options::stream, a stream of the caller's (the CUDA
// backend's non-blocking streams: order the synchronous copies yourself).
//
// Graph capture. Every op but Sample and MlaAttentionPrefill reads its
// sequences, counts and layouts from device memory and can be captured, once
// an eager call of the same sizes has grown the scratch buffers, planned the
// products and uploaded the rope table (a buffer that grows during capture
// allocates inside the graph). An upload of a host descriptor while the
// stream is captured would replay stale bytes: it invalidates the capture
// instead, so EndCapture fails and the caller runs eagerly.
//
// Weights. Linear and GatedFfn take F32, BF16 or F8E4M3 weights (gemm.h);
// Embedding tables and RmsNorm weights F32 or BF16; MLA's wkv_b F32 or BF16
// (dequantize an FP8 kv_b_proj at load); the routing bias F32.
//
// Numerics versus the CPU twin (the tests' tolerances cite these):
//  - F32 weights: the same float32 function; products and reductions sum
//    in another order (cuBLASLt, tree reductions, online softmax).
//  - BF16 weights: activations are rounded to bf16 before each product.
//  - FP8 weights: activations are quantized per token and 128 channels.
//  - RmsNorm, Rope, routing, ScatterAddRows, the MoE combine and sampling
//    round exactly where the CPU twin rounds (no fused multiply-add), so
//    they match it to the last bit except where CUDA's exp/cos/sin differ
//    from glibc's in the last bit, or a double sum is added in another
//    order. Sampling therefore draws the CPU twin's token for the same
//    (seed, draw_index), unless a uniform draw lands within ~1e-16 of a
//    boundary of the cumulative distribution; greedy is exact.
//
// An op's contract violated by the caller aborts, naming it; a contract
// only a kernel can check (a token id outside the vocabulary) aborts at the
// next Synchronize(). Not thread safe: one thread at a time.
#ifndef MOESERVE_KERNELS_CUDA_CUDA_OPS_H_
#define MOESERVE_KERNELS_CUDA_CUDA_OPS_H_

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/gemm.h"
#include "kernels/ops.h"

namespace moeserve::cuda {

class CudaOps final : public Ops {
 public:
  struct Options {
    int device = 0;
    size_t gemm_workspace_bytes = size_t{32} << 20;  // cuBLASLt's, as NVIDIA advises for Hopper
    // Queue everything on this stream (of `device`; not owned, must outlive
    // the op set). Null: the op set creates and owns a blocking stream.
    cudaStream_t stream = nullptr;
  };
  // Unavailable when there is no usable device.
  static absl::StatusOr<std::unique_ptr<CudaOps>> Create(const Options& options);
  ~CudaOps() override;
  CudaOps(const CudaOps&) = delete;
  CudaOps& operator=(const CudaOps&) = delete;

  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }
  int multiprocessors() const { return sm_count_; }
  const GemmRunner::Stats& gemm_stats() const { return gemm_->stats(); }

  // Waits for all queued work. A CUDA error of that work comes back as a
  // status; a contract violation a kernel flagged aborts.
  absl::Status Synchronize();

  // ---- Ops ----
  void Embedding(const Tensor& table, std::span<const int32_t> ids, MatView out) override;
  void RmsNorm(ConstMatView x, const Tensor& weight, float eps, MatView out) override;
  void Linear(ConstMatView x, const Tensor& w, MatView y) override;
  void Add(ConstMatView x, MatView y) override;
  void Rope(MatView x, int64_t heads_per_token, std::span<const int32_t> positions,
            const RopeTable& table) override;
  void CacheWrite(ConstMatView values, const SeqTable& seqs, const PagedCacheView& cache) override;
  void MlaAttentionPrefill(ConstMatView q, const Tensor& wkv_b, const PagedCacheView& cache,
                           const SeqTable& seqs, std::span<const SeqSlice> host,
                           const MlaShape& shape, MatView out) override;
  void MlaAttentionAbsorbed(ConstMatView q, const Tensor& wkv_b, const PagedCacheView& cache,
                            const SeqTable& seqs, const MlaShape& shape, MatView out) override;
  void GqaAttention(ConstMatView q, const PagedCacheView& cache, const SeqTable& seqs,
                    const GqaShape& shape, MatView out) override;
  void RouteTopK(ConstMatView logits, const RoutingParams& params, std::span<int32_t> expert_ids,
                 std::span<float> weights) override;
  void GatedFfn(ConstMatView x, const Tensor& gate, const Tensor& up, const Tensor& down,
                MatView out) override;
  void GatherRows(ConstMatView x, std::span<const int32_t> rows, MatView out) override;
  void ScatterAddRows(ConstMatView x, std::span<const int32_t> rows, std::span<const float> weights,
                      MatView y) override;
  void LogSoftmax(ConstMatView x, MatView out) override;
  void Sample(ConstMatView logits, std::span<const SamplingParams> params,
              std::span<const uint64_t> draw_index, std::span<int32_t> token_ids,
              std::span<float> logprobs) override;

  // ---- The MoE block in fixed-capacity buffers (moe_fixed_capacity.cc) ----
  // Every span is device memory; MoeSlotTable's arrays too. No count is read
  // back to the host.
  //  - MoeDispatchLayout: the CPU twin's rows, counts and loads exactly
  //    (integer logic, moe_dispatch.h); rows past the counts are untouched.
  //  - GroupedGatedFfn: each local expert over all sources * capacity rows
  //    of its groups (rows past the counts zero-filled), one GatedFfn per
  //    expert: products of sources * capacity rows whatever the counts. Rows
  //    past the counts of `out` are untouched. Numerics: GatedFfn's.
  //  - MoeCombineReduce: the CPU twin's float sum to the bit.
  // What one grouped launch needs and cuBLASLt 13.1 lacks: a grouped
  // (ragged) matmul whose per-group row counts are read from device memory;
  // its POINTER_ARRAY batch mode takes one m/n/k for all problems and one
  // scale pointer per operand, so it cannot carry per-expert FP8 block
  // scales, and bf16 batches would still compute every row of the capacity.
  void MoeDispatchLayout(ConstMatView x, std::span<const int32_t> expert_ids, int64_t top_k,
                         const MoeSlotTable& table, int32_t rank, int64_t capacity, MatView send,
                         std::span<int32_t> send_counts, std::span<int32_t> pair_rows,
                         std::span<int64_t> expert_load,
                         std::span<const int32_t> tokens_in_use) override;
  void GroupedGatedFfn(ConstMatView x, std::span<const int32_t> counts, int64_t sources,
                       int64_t capacity, std::span<const ExpertFfnWeights> experts,
                       MatView out) override;
  void MoeCombineReduce(ConstMatView combined, std::span<const int32_t> pair_rows,
                        std::span<const int32_t> expert_ids, std::span<const float> gains,
                        int64_t top_k, ConstMatView shared, MatView out) override;

  // ---- The grouped MoE path (beyond Ops) ----
  // Replaces the per-expert GatherRows / GatedFfn / ScatterAddRows loop of a
  // MoE block with one permutation, one grouped FFN and one combine over the
  // experts [first_expert, first_expert + num_experts) this rank holds:
  //   perm = PermuteByExpert(ids, top_k, first, count);      // waits once
  //   GatherPermuted(x, perm, x_perm);                       // [padded_rows, hidden]
  //   GroupedGatedFfn(x_perm, perm, experts, y_perm);
  //   CombineExperts(y_perm, perm, ids, gains, out);         // out += ...
  struct ExpertPermutation {
    int64_t tokens = 0;
    int64_t top_k = 0;
    int64_t first_expert = 0;
    // Local expert e owns permuted rows [offsets[e], offsets[e + 1]): its
    // counts[e] tokens, then padding up to a multiple of 4 rows. Host copies.
    std::vector<int64_t> offsets;
    std::vector<int64_t> counts;
    // Device arrays, valid until the next PermuteByExpert:
    const int32_t* rows = nullptr;            // [padded_rows()] source token, -1 for padding
    const int32_t* slot_rows = nullptr;       // [tokens * top_k] permuted row, -1 if not local
    const int32_t* device_offsets = nullptr;  // offsets as int32

    int64_t num_experts() const { return static_cast<int64_t>(counts.size()); }
    int64_t padded_rows() const { return offsets.empty() ? 0 : offsets.back(); }
  };
  // expert_ids: [tokens * top_k] on the device (RouteTopK's output).
  ExpertPermutation PermuteByExpert(std::span<const int32_t> expert_ids, int64_t top_k,
                                    int64_t first_expert, int64_t num_experts);
  void GatherPermuted(ConstMatView x, const ExpertPermutation& perm, MatView x_perm);
  struct ExpertWeights {
    const Tensor* gate = nullptr;  // null: the expert is not loaded (its output rows are zero)
    const Tensor* up = nullptr;
    const Tensor* down = nullptr;
  };
  // y_perm = GatedFfn of each group with its expert's weights (all experts
  // the same dtype): one activation conversion for all groups, then one
  // cuBLASLt product per expert and projection.
  void GroupedGatedFfn(ConstMatView x_perm, const ExpertPermutation& perm,
                       std::span<const ExpertWeights> experts, MatView y_perm);
  // out[t] += sum over the token's local slots, in ascending expert id, of
  // gains[t * top_k + j] * y_perm[slot row]. gains on the device.
  void CombineExperts(ConstMatView y_perm, const ExpertPermutation& perm,
                      std::span<const int32_t> expert_ids, std::span<const float> gains,
                      MatView out);

 private:
  struct StreamDeleter {
    bool owned = true;                           // false: Options::stream, the caller's
    void operator()(CUstream_st* stream) const;  // synchronizes, then destroys if owned
  };
  struct DeviceFree {
    void operator()(uint32_t* p) const;
  };
  CudaOps(int device, int sm_count, std::unique_ptr<CUstream_st, StreamDeleter> stream,
          std::unique_ptr<uint32_t, DeviceFree> error_word, std::unique_ptr<GemmRunner> gemm);

  // Device copy of `host`, through the given cache (skipped when unchanged).
  const void* Upload(const std::vector<std::byte>& host, CachedUpload& cache);
  const float* RopeFrequencies(const RopeTable& table);
  // Sets every element of `v` to zero (stream-ordered, capturable).
  void ZeroRows(MatView v);
  void MlaPrefillOne(ConstMatView q, const Tensor& wkv_b, const PagedCacheView& cache,
                     const SeqSlice& seq, const MlaShape& shape, MatView out);

  int device_;
  int sm_count_;
  // Declared first among the CUDA resources, so destroyed last: the buffers
  // below free their memory in its order.
  std::unique_ptr<CUstream_st, StreamDeleter> stream_owner_;
  cudaStream_t stream_;                               // stream_owner_'s; everything is queued here
  std::unique_ptr<uint32_t, DeviceFree> error_word_;  // kernels flag contract violations here
  std::unique_ptr<GemmRunner> gemm_;
  HostUploader uploader_;
  DeviceBuffer scratch_;      // one op's temporaries
  DeviceBuffer sample_meta_;  // Sample's per-row parameters and sort segments
  DeviceBuffer moe_;          // PermuteByExpert's arrays
  DeviceBuffer moe_rows_;     // GroupedGatedFfn's gathered rows of one expert and their outputs
  CachedUpload rope_freqs_;   // RopeTable::inv_freq
  CachedUpload prefill_meta_;  // the prefill form's context rows and its one-sequence table
};

}  // namespace moeserve::cuda

#endif  // MOESERVE_KERNELS_CUDA_CUDA_OPS_H_
