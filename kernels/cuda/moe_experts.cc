// Feed-forward ops of the CUDA op set: the dense SiLU-gated FFN (an Ops op)
// and the grouped path over a MoE layer's local experts (beyond Ops).
#include <algorithm>

#include "kernels/cuda/contracts.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/moe_permute.h"

namespace moeserve::cuda {
namespace {

constexpr int64_t kGroupRows = 4;  // group padding (16-byte FP8 scale vectors)

MatView Scratch(float* data, int64_t rows, int64_t cols) { return {data, rows, cols, cols}; }

}  // namespace

void CudaOps::GatedFfn(ConstMatView x, const Tensor& gate, const Tensor& up, const Tensor& down,
                       MatView out) {
  RequireView(x, "ffn x");
  RequireView(out, "ffn out");
  Require(!gate.empty() && gate.rank() == 2, "ffn gate must be 2-D");
  const int64_t inter = gate.dim(0), hidden = x.cols;
  Require(
      gate.dtype() == DType::kF32 || gate.dtype() == DType::kBF16 || gate.dtype() == DType::kF8E4M3,
      "ffn gate must be F32, BF16 or F8E4M3");
  RequireDeviceWeight(gate, inter, hidden, gate.dtype(), gate.dtype(),
                      "ffn gate must be a device tensor [inter, hidden]");
  RequireDeviceWeight(up, inter, hidden, gate.dtype(), gate.dtype(),
                      "ffn up must be a device tensor [inter, hidden] of gate's dtype");
  Require(!down.empty() && down.device() == Device::kCuda && down.rank() == 2 &&
              down.dim(0) == hidden && down.dim(1) == inter,
          "ffn down must be a device tensor [hidden, inter]");
  Require(out.rows == x.rows && out.cols == hidden, "ffn out must be [T, hidden]");
  if (x.rows == 0) return;
  ScratchLayout layout;
  const size_t g_off = layout.Add<float>(x.rows * inter);
  const size_t u_off = layout.Add<float>(x.rows * inter);
  void* base = scratch_.Reserve(layout.bytes());
  const MatView g = Scratch(At<float>(base, g_off), x.rows, inter);
  const MatView u = Scratch(At<float>(base, u_off), x.rows, inter);
  const GemmInput in = gemm_->Prepare(x, gate.dtype());
  gemm_->Multiply(in, gate, g);
  gemm_->Multiply(in, up, u);
  LaunchSiluMul(g.data, g.stride, u.data, u.stride, g.rows, g.cols, stream_);
  gemm_->Linear(g, down, out);
}

CudaOps::ExpertPermutation CudaOps::PermuteByExpert(std::span<const int32_t> expert_ids,
                                                    int64_t top_k, int64_t first_expert,
                                                    int64_t num_experts) {
  const auto n = static_cast<int64_t>(expert_ids.size());
  Require(top_k > 0 && n % top_k == 0, "permute: expert_ids must hold tokens * top_k entries");
  Require(num_experts >= 0 && first_expert >= 0, "permute: negative expert range");
  ExpertPermutation perm;
  perm.tokens = n / top_k;
  perm.top_k = top_k;
  perm.first_expert = first_expert;
  ScratchLayout layout;
  const size_t counts_off = layout.Add<int32_t>(num_experts);
  const size_t offsets_off = layout.Add<int32_t>(num_experts + 1);
  const size_t rows_off = layout.Add<int32_t>(n + (kGroupRows - 1) * num_experts);
  const size_t slots_off = layout.Add<int32_t>(n);
  void* base = moe_.Reserve(layout.bytes());
  int32_t* counts = At<int32_t>(base, counts_off);
  int32_t* offsets = At<int32_t>(base, offsets_off);
  LaunchCountExperts(expert_ids.data(), n, first_expert, num_experts, counts, stream_);

  std::vector<int32_t> host_counts(static_cast<size_t>(num_experts));
  MOESERVE_CUDA_CHECK(cudaMemcpyAsync(host_counts.data(), counts,
                                      host_counts.size() * sizeof(int32_t), cudaMemcpyDeviceToHost,
                                      stream_));
  MOESERVE_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the GEMM sizes come from these
  std::vector<int32_t> host_offsets(static_cast<size_t>(num_experts) + 1, 0);
  perm.counts.resize(static_cast<size_t>(num_experts));
  perm.offsets.resize(static_cast<size_t>(num_experts) + 1, 0);
  for (int64_t e = 0; e < num_experts; ++e) {
    const auto i = static_cast<size_t>(e);
    perm.counts[i] = host_counts[i];
    const int64_t padded = (host_counts[i] + kGroupRows - 1) / kGroupRows * kGroupRows;
    perm.offsets[i + 1] = perm.offsets[i] + padded;
    host_offsets[i + 1] = static_cast<int32_t>(perm.offsets[i + 1]);
  }
  uploader_.Upload(host_offsets.data(), offsets, host_offsets.size() * sizeof(int32_t));
  int32_t* rows = At<int32_t>(base, rows_off);
  int32_t* slot_rows = At<int32_t>(base, slots_off);
  LaunchFillPermutation(expert_ids.data(), n, top_k, first_expert, num_experts, offsets, counts,
                        rows, slot_rows, stream_);
  perm.rows = rows;
  perm.slot_rows = slot_rows;
  perm.device_offsets = offsets;
  return perm;
}

void CudaOps::GatherPermuted(ConstMatView x, const ExpertPermutation& perm, MatView x_perm) {
  RequireView(x, "permute x");
  RequireView(x_perm, "permute x_perm");
  Require(x_perm.rows == perm.padded_rows() && x_perm.cols == x.cols && x.rows == perm.tokens,
          "permute: x_perm must be [padded_rows, x.cols] and x [tokens, cols]");
  LaunchGatherRows(x.data, x.stride, x.rows, x.cols, perm.rows, x_perm.rows, x_perm.data,
                   x_perm.stride, /*allow_padding=*/true, error_word_.get(), stream_);
}

void CudaOps::GroupedGatedFfn(ConstMatView x_perm, const ExpertPermutation& perm,
                              std::span<const ExpertWeights> experts, MatView y_perm) {
  RequireView(x_perm, "grouped ffn x");
  RequireView(y_perm, "grouped ffn y");
  const int64_t rows = perm.padded_rows(), hidden = x_perm.cols;
  Require(static_cast<int64_t>(experts.size()) == perm.num_experts(),
          "grouped ffn: one ExpertWeights per local expert");
  Require(x_perm.rows == rows && y_perm.rows == rows && y_perm.cols == hidden,
          "grouped ffn: x_perm and y_perm must be [padded_rows, hidden]");
  const Tensor* model = nullptr;  // the first loaded expert fixes dtype and sizes
  for (const ExpertWeights& w : experts) {
    if (w.gate != nullptr) {
      model = w.gate;
      break;
    }
  }
  if (rows == 0) return;
  if (model == nullptr) {  // no local expert loaded: nothing to add
    MOESERVE_CUDA_CHECK(cudaMemset2DAsync(
        y_perm.data, static_cast<size_t>(y_perm.stride) * sizeof(float), 0,
        static_cast<size_t>(hidden) * sizeof(float), static_cast<size_t>(rows), stream_));
    return;
  }
  const DType dtype = model->dtype();
  const int64_t inter = model->dim(0);
  for (const ExpertWeights& w : experts) {
    if (w.gate == nullptr) continue;
    RequireDeviceWeight(*w.gate, inter, hidden, dtype, dtype, "grouped ffn: expert gate");
    RequireDeviceWeight(*w.up, inter, hidden, dtype, dtype, "grouped ffn: expert up");
    RequireDeviceWeight(*w.down, hidden, inter, dtype, dtype, "grouped ffn: expert down");
  }
  ScratchLayout layout;
  const size_t g_off = layout.Add<float>(rows * inter);
  const size_t u_off = layout.Add<float>(rows * inter);
  void* base = scratch_.Reserve(layout.bytes());
  const MatView g = Scratch(At<float>(base, g_off), rows, inter);
  const MatView u = Scratch(At<float>(base, u_off), rows, inter);
  // Rows of experts that are skipped stay finite zeros through SiLU and quantization.
  MOESERVE_CUDA_CHECK(cudaMemsetAsync(base, 0, layout.bytes(), stream_));

  const auto prepare = [&](ConstMatView m) {
    return dtype == DType::kF8E4M3
               ? gemm_->PrepareGroupedFp8(m, perm.device_offsets, perm.num_experts())
               : gemm_->Prepare(m, dtype);
  };
  const auto for_each_group = [&](auto&& fn) {
    for (size_t e = 0; e < experts.size(); ++e) {
      if (perm.counts[e] == 0 || experts[e].gate == nullptr) continue;
      fn(experts[e], perm.offsets[e], perm.offsets[e + 1] - perm.offsets[e]);
    }
  };
  // Groups of experts that are not loaded contribute nothing (as on the
  // CPU, which skips them): zero their rows of the output.
  for (size_t e = 0; e < experts.size(); ++e) {
    if (experts[e].gate != nullptr || perm.offsets[e + 1] == perm.offsets[e]) continue;
    const MatView skipped = y_perm.Rows(perm.offsets[e], perm.offsets[e + 1] - perm.offsets[e]);
    MOESERVE_CUDA_CHECK(cudaMemset2DAsync(skipped.data,
                                          static_cast<size_t>(skipped.stride) * sizeof(float), 0,
                                          static_cast<size_t>(skipped.cols) * sizeof(float),
                                          static_cast<size_t>(skipped.rows), stream_));
  }
  const GemmInput in = prepare(x_perm);
  for_each_group([&](const ExpertWeights& w, int64_t begin, int64_t count) {
    const GemmInput part = in.Rows(begin, count);
    gemm_->Multiply(part, *w.gate, g.Rows(begin, count));
    gemm_->Multiply(part, *w.up, u.Rows(begin, count));
  });
  LaunchSiluMul(g.data, g.stride, u.data, u.stride, rows, inter, stream_);
  const GemmInput h = prepare(g);
  for_each_group([&](const ExpertWeights& w, int64_t begin, int64_t count) {
    gemm_->Multiply(h.Rows(begin, count), *w.down, y_perm.Rows(begin, count));
  });
}

void CudaOps::CombineExperts(ConstMatView y_perm, const ExpertPermutation& perm,
                             std::span<const int32_t> expert_ids, std::span<const float> gains,
                             MatView out) {
  RequireView(y_perm, "combine y_perm");
  RequireView(out, "combine out");
  const auto entries = static_cast<size_t>(perm.tokens * perm.top_k);
  Require(expert_ids.size() == entries && gains.size() == entries,
          "combine: expert_ids and gains must hold tokens * top_k entries");
  Require(out.rows == perm.tokens && out.cols == y_perm.cols && y_perm.rows == perm.padded_rows(),
          "combine: out must be [tokens, hidden], y_perm [padded_rows, hidden]");
  LaunchCombineExperts(y_perm.data, y_perm.stride, perm.slot_rows, expert_ids.data(), gains.data(),
                       perm.tokens, perm.top_k, out.cols, out.data, out.stride, stream_);
}

}  // namespace moeserve::cuda
