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
  DType dtype = DType::kF32;  // kF32, kBF16, kF8E4M3 or kF4E2M1x2
  // As stored: for kF4E2M1x2 [rows, cols / 2] bytes of the [rows, cols]
  // weight.
  std::span<const int64_t> shape;
  // numel * DTypeSize(dtype) bytes, row-major; any alignment (a safetensors
  // data section promises none).
  const void* data = nullptr;
  // Float32 scales of a quantized weight [rows, cols] (E8M0 scales arrive
  // decoded: they are exact in float32), row-major, aligned for float:
  //  - kF8E4M3: the checkpoint's "<name>_scale_inv" (DeepSeek-V3) or
  //    "<stem>.scale" (V4), [ceil(rows / block), ceil(cols / block)]:
  //    w[r, c] = code[r, c] * scale[r / block, c / block].
  //  - kF4E2M1x2: "<stem>.scale", one per `block` inputs of a row,
  //    [rows, ceil(cols / block)]: w[r, c] = code[r, c] * scale[r, c / block].
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
// and F4E2M1x2 dequantized block by block (one float32 multiply per element,
// as DeepSeek's weight_dequant does; the FP4 result is [rows, 2 * shape[1]]). The CPU backend's
// weights, and what Checkpoint::ReadF32 returns. Assumes `w` was validated (as Checkpoint::ReadRaw
// does); InvalidArgument for another dtype.
absl::StatusOr<Tensor> HostWeightToF32(const HostWeight& w);

}  // namespace moeserve

#endif  // MOESERVE_KERNELS_HOST_WEIGHT_H_
