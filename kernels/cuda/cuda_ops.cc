// The CUDA op set's object and its small ops: creation, synchronization,
// contract checks, and the ops that are one kernel each.
#include "kernels/cuda/cuda_ops.h"

#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/contracts.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/kv_cache.h"
#include "kernels/cuda/norm_rope.h"
#include "kernels/cuda/routing.h"

namespace moeserve::cuda {

void RequireView(ConstMatView v, const char* name) {
  Require(v.rows >= 0 && v.cols >= 0, name);
  Require(v.rows <= 1 || v.stride >= v.cols, name);
  Require(v.rows == 0 || v.cols == 0 || v.data != nullptr, name);
}

void RequireDeviceWeight(const Tensor& w, int64_t rows, int64_t cols, DType a, DType b,
                         const char* what) {
  Require(!w.empty() && w.device() == Device::kCuda, what);
  Require(w.dtype() == a || w.dtype() == b, what);
  Require(w.rank() == 2 && w.dim(0) == rows && w.dim(1) == cols, what);
}

void RequireSeq(const SeqSlice& seq, int64_t batch_rows, const PagedCacheView& cache) {
  Require(
      seq.token_begin >= 0 && seq.num_tokens >= 0 && seq.token_begin + seq.num_tokens <= batch_rows,
      "sequence rows outside the batch");
  Require(seq.num_tokens <= seq.context_len, "sequence has more new tokens than context");
  Require(cache.block_size > 0, "cache block_size must be positive");
  const int64_t blocks = CeilDiv(seq.context_len, cache.block_size);
  Require(static_cast<int64_t>(seq.block_table.size()) >= blocks,
          "block table shorter than the context");
  for (int64_t b = 0; b < blocks; ++b) {
    const int32_t id = seq.block_table[static_cast<size_t>(b)];
    Require(id >= 0 && id < cache.num_blocks, "block id outside the cache");
  }
}

void RequireTable(const SeqTable& t, int64_t batch_rows, const PagedCacheView& cache) {
  Require(t.num_seqs >= 0 && t.max_blocks >= 0 && t.max_tokens >= 0 && t.max_context >= 0,
          "sequence table sizes must be >= 0");
  Require(t.rows == batch_rows, "sequence table rows differ from the batch's");
  Require(t.num_seqs == 0 || (t.token_begin != nullptr && t.num_tokens != nullptr &&
                              t.context_len != nullptr && t.block_tables != nullptr),
          "sequence table arrays missing");
  Require(cache.block_size > 0, "cache block_size must be positive");
  Require(t.max_context <= t.max_blocks * cache.block_size,
          "sequence table: max_context beyond what max_blocks cover");
  Require(t.max_tokens <= batch_rows, "sequence table: max_tokens beyond the batch");
}

void CudaOps::StreamDeleter::operator()(CUstream_st* stream) const {
  (void)cudaStreamSynchronize(stream);
  if (owned) (void)cudaStreamDestroy(stream);
}

void CudaOps::DeviceFree::operator()(uint32_t* p) const { (void)cudaFree(p); }

absl::StatusOr<std::unique_ptr<CudaOps>> CudaOps::Create(const Options& options) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    return absl::UnavailableError(absl::StrCat(
        "no CUDA device: ", err != cudaSuccess ? cudaGetErrorString(err) : "none visible"));
  }
  if (options.device < 0 || options.device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA device ", options.device, " requested, ", count, " visible"));
  }
  if (absl::Status s = CudaStatus(cudaSetDevice(options.device), "cudaSetDevice"); !s.ok()) {
    return s;
  }
  int sm_count = 0;
  if (absl::Status s = CudaStatus(
          cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, options.device),
          "multiprocessor count");
      !s.ok()) {
    return s;
  }
  cudaStream_t stream = options.stream;
  // Our own stream is a blocking one: the legacy default stream (cudaMemcpy)
  // waits for it.
  if (stream == nullptr) {
    if (absl::Status s = CudaStatus(cudaStreamCreate(&stream), "cudaStreamCreate"); !s.ok()) {
      return s;
    }
  }
  std::unique_ptr<CUstream_st, StreamDeleter> stream_owner(
      stream, StreamDeleter{.owned = options.stream == nullptr});
  void* word = nullptr;
  if (absl::Status s = CudaStatus(cudaMalloc(&word, sizeof(uint32_t)), "error word"); !s.ok()) {
    return s;
  }
  std::unique_ptr<uint32_t, DeviceFree> error_word(static_cast<uint32_t*>(word));
  if (absl::Status s = CudaStatus(cudaMemset(word, 0, sizeof(uint32_t)), "error word"); !s.ok()) {
    return s;
  }
  auto gemm = GemmRunner::Create(stream, options.gemm_workspace_bytes);
  if (!gemm.ok()) return gemm.status();
  return std::unique_ptr<CudaOps>(new CudaOps(options.device, sm_count, std::move(stream_owner),
                                              std::move(error_word), *std::move(gemm)));
}

CudaOps::CudaOps(int device, int sm_count, std::unique_ptr<CUstream_st, StreamDeleter> stream,
                 std::unique_ptr<uint32_t, DeviceFree> error_word, std::unique_ptr<GemmRunner> gemm)
    : device_(device),
      sm_count_(sm_count),
      stream_owner_(std::move(stream)),
      stream_(stream_owner_.get()),
      error_word_(std::move(error_word)),
      gemm_(std::move(gemm)),
      uploader_(stream_),
      scratch_(stream_),
      sample_meta_(stream_),
      moe_(stream_),
      moe_rows_(stream_),
      rope_freqs_(stream_),
      prefill_meta_(stream_) {}

CudaOps::~CudaOps() { (void)cudaStreamSynchronize(stream_); }

absl::Status CudaOps::Synchronize() {
  if (absl::Status s = CudaStatus(cudaStreamSynchronize(stream_), "queued CUDA work"); !s.ok()) {
    return s;
  }
  uint32_t bits = 0;
  if (absl::Status s = CudaStatus(
          cudaMemcpy(&bits, error_word_.get(), sizeof(bits), cudaMemcpyDeviceToHost), "error word");
      !s.ok()) {
    return s;
  }
  if (bits != 0) {
    std::fprintf(stderr, "moeserve cuda ops: contract violated on the device: %s\n",
                 DescribeDeviceErrors(bits).c_str());
    std::abort();
  }
  return absl::OkStatus();
}

const void* CudaOps::Upload(const std::vector<std::byte>& host, CachedUpload& cache) {
  return cache.Get(host, uploader_);
}

void CudaOps::Embedding(const Tensor& table, std::span<const int32_t> ids, MatView out) {
  Require(!table.empty() && table.device() == Device::kCuda && table.rank() == 2 &&
              (table.dtype() == DType::kF32 || table.dtype() == DType::kBF16),
          "embedding table must be a 2-D F32 or BF16 device tensor");
  RequireView(out, "embedding out");
  Require(out.rows == static_cast<int64_t>(ids.size()) && out.cols == table.dim(1),
          "embedding out must be [ids, hidden]");
  LaunchEmbedding(table.raw(), table.dtype() == DType::kBF16, table.dim(0), table.dim(1),
                  ids.data(), out.rows, out.data, out.stride, error_word_.get(), stream_);
}

void CudaOps::RmsNorm(ConstMatView x, const Tensor& weight, float eps, MatView out) {
  RequireView(x, "rmsnorm x");
  RequireView(out, "rmsnorm out");
  Require(out.rows == x.rows && out.cols == x.cols, "rmsnorm out shape differs from x");
  Require(!weight.empty() && weight.device() == Device::kCuda && weight.numel() == x.cols &&
              (weight.dtype() == DType::kF32 || weight.dtype() == DType::kBF16),
          "rmsnorm weight must be an F32 or BF16 device tensor of x.cols");
  LaunchRmsNorm(x.data, x.stride, weight.raw(), weight.dtype() == DType::kBF16, eps, out.data,
                out.stride, x.rows, x.cols, stream_);
}

void CudaOps::Linear(ConstMatView x, const Tensor& w, MatView y) {
  RequireView(x, "linear x");
  RequireView(y, "linear y");
  gemm_->Linear(x, w, y);
}

void CudaOps::Add(ConstMatView x, MatView y) {
  RequireView(x, "add x");
  RequireView(y, "add y");
  Require(x.rows == y.rows && x.cols == y.cols, "add: shapes differ");
  LaunchAdd(x.data, x.stride, y.data, y.stride, y.rows, y.cols, stream_);
}

const float* CudaOps::RopeFrequencies(const RopeTable& table) {
  HostPack pack;
  pack.Put(table.inv_freq);
  return static_cast<const float*>(Upload(pack.bytes(), rope_freqs_));
}

void CudaOps::Rope(MatView x, int64_t heads_per_token, std::span<const int32_t> positions,
                   const RopeTable& table) {
  RequireView(x, "rope x");
  const int64_t half = static_cast<int64_t>(table.inv_freq.size());
  Require(x.cols == 2 * half, "rope: x.cols != rotary_dim");
  Require(heads_per_token > 0 && x.rows == static_cast<int64_t>(positions.size()) * heads_per_token,
          "rope: x.rows != tokens * heads_per_token");
  if (x.rows == 0 || half == 0) return;
  LaunchRope(x.data, x.stride, x.rows, half, heads_per_token, positions.data(),
             RopeFrequencies(table), table.attention_factor, table.style == RopeStyle::kInterleaved,
             stream_);
}

void CudaOps::CacheWrite(ConstMatView values, const SeqTable& seqs,
                         const PagedCacheView& cache) {
  RequireView(values, "cache write values");
  Require(values.cols == cache.width, "cache write: values.cols != cache.width");
  Require(seqs.rows == values.rows && (values.rows == 0 || seqs.slots != nullptr),
          "cache write: the table's slots must cover the values' rows");
  if (values.rows == 0) return;
  LaunchKvCacheWrite(values.data, values.stride, values.rows, seqs.slots,
                     cache.num_blocks * cache.block_size, static_cast<uint8_t*>(cache.data),
                     ToDevice(cache.layout()), error_word_.get(), stream_);
}

void CudaOps::ZeroRows(MatView v) {
  if (v.rows == 0 || v.cols == 0) return;
  MOESERVE_CUDA_CHECK(cudaMemset2DAsync(v.data, static_cast<size_t>(v.stride) * sizeof(float), 0,
                                        static_cast<size_t>(v.cols) * sizeof(float),
                                        static_cast<size_t>(v.rows), stream_));
}

void CudaOps::GatherRows(ConstMatView x, std::span<const int32_t> rows, MatView out) {
  RequireView(x, "gather x");
  RequireView(out, "gather out");
  Require(out.rows == static_cast<int64_t>(rows.size()) && out.cols == x.cols,
          "gather out must be [rows, x.cols]");
  LaunchGatherRows(x.data, x.stride, x.rows, x.cols, rows.data(), out.rows, out.data, out.stride,
                   /*allow_padding=*/false, error_word_.get(), stream_);
}

void CudaOps::ScatterAddRows(ConstMatView x, std::span<const int32_t> rows,
                             std::span<const float> weights, MatView y) {
  RequireView(x, "scatter x");
  RequireView(y, "scatter y");
  Require(x.rows == static_cast<int64_t>(rows.size()) && rows.size() == weights.size() &&
              x.cols == y.cols,
          "scatter: x, rows, weights and y disagree");
  LaunchScatterAddRows(x.data, x.stride, x.rows, x.cols, rows.data(), weights.data(), y.data,
                       y.stride, y.rows, error_word_.get(), stream_);
}

void CudaOps::LogSoftmax(ConstMatView x, MatView out) {
  RequireView(x, "log_softmax x");
  RequireView(out, "log_softmax out");
  Require(out.rows == x.rows && out.cols == x.cols, "log_softmax out shape differs from x");
  LaunchLogSoftmax(x.data, x.stride, out.data, out.stride, x.rows, x.cols, stream_);
}

void CudaOps::RouteTopK(ConstMatView logits, const RoutingParams& p, std::span<int32_t> expert_ids,
                        std::span<float> weights) {
  RequireView(logits, "routing logits");
  Require(p.num_experts > 0 && logits.cols == p.num_experts,
          "routing logits must be [T, num_experts]");
  Require(p.n_group >= 1 && p.num_experts % p.n_group == 0,
          "routing: num_experts must be a multiple of n_group");
  Require(p.n_group == 1 || (p.topk_group >= 1 && p.topk_group <= p.n_group),
          "routing: topk_group must lie in [1, n_group]");
  const int64_t eligible =
      p.n_group == 1 ? p.num_experts : p.topk_group * (p.num_experts / p.n_group);
  Require(p.top_k >= 1 && p.top_k <= eligible, "routing: top_k outside [1, eligible experts]");
  const size_t want = static_cast<size_t>(logits.rows * p.top_k);
  Require(expert_ids.size() == want && weights.size() == want,
          "routing outputs must hold T * top_k entries");
  RoutingArgs args;
  args.logits = logits.data;
  args.stride = logits.stride;
  args.tokens = logits.rows;
  args.num_experts = static_cast<int32_t>(p.num_experts);
  args.top_k = static_cast<int32_t>(p.top_k);
  args.n_group = static_cast<int32_t>(p.n_group);
  args.topk_group = static_cast<int32_t>(p.topk_group);
  args.sigmoid = p.scoring == ScoringFunc::kSigmoid;
  args.bias = p.correction_bias;
  args.norm_topk_prob = p.norm_topk_prob;
  args.routed_scaling_factor = p.routed_scaling_factor;
  args.expert_ids = expert_ids.data();
  args.weights = weights.data();
  LaunchRouteTopK(args, stream_);
}

}  // namespace moeserve::cuda
