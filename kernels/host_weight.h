// A weight as a checkpoint stores it, in host memory, on its way into a
// backend (Backend::LoadWeight), and what the model uses it for: the use
// decides the dtype the weight gets in backend memory.
#ifndef MOESERVE_KERNELS_HOST_WEIGHT_H_
#define MOESERVE_KERNELS_HOST_WEIGHT_H_

#include <cstdint>
#include <span>
#include <string_view>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"

namespace moeserve {

// A view: the caller keeps the bytes alive while the weight is loaded.
struct HostWeight {
  std::string_view name;      // the checkpoint's tensor name, for errors
  DType dtype = DType::kF32;  // kF32, kBF16 or kF8E4M3
  std::span<const int64_t> shape;
  // numel * DTypeSize(dtype) bytes, row-major; any alignment (a safetensors
  // data section promises none).
  const void* data = nullptr;
  // kF8E4M3 only: float32 block scales (the checkpoint's
  // "<name>_scale_inv"), row-major [ceil(rows / block), ceil(cols / block)]
  // for a 2-D weight [rows, cols]: w[r, c] = code[r, c] * scale[r / block,
  // c / block]. Aligned for float.
  const float* scale_inv = nullptr;
  int64_t block = 0;
};

// What a weight is for. Each backend documents the dtype each use gets.
enum class WeightUse : uint8_t {
  kMatrix,     // a product's weight [out, in]: Linear, GatedFfn, the router
               // gate, lm_head
  kEmbedding,  // the token embedding table [vocab, hidden]
  kVector,     // norm weights and biases (the MoE correction bias)
  kMlaKvB,     // MLA's kv_b_proj, which the attention op reads in parts
};

// `w` widened to a float32 host tensor: F32 copied, BF16 widened, F8E4M3
// dequantized block by block (one float32 multiply per element, as
// DeepSeek's weight_dequant does). The CPU backend's weights, and what
// Checkpoint::ReadF32 returns. Assumes `w` was validated (as
// Checkpoint::ReadRaw does); InvalidArgument for another dtype.
absl::StatusOr<Tensor> HostWeightToF32(const HostWeight& w);

}  // namespace moeserve

#endif  // MOESERVE_KERNELS_HOST_WEIGHT_H_
