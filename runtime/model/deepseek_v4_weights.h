// The tensors of a DeepSeek-V4 checkpoint in the published layout, derived
// from its config, and a check of a checkpoint against them that reads
// headers (and the small hash-routing tables) only.
//
// Names have no "model." prefix: "embed.weight", "layers.N.attn.wq_a.weight",
// "layers.N.ffn.experts.E.w1.weight", "mtp.K.e_proj.weight", ... A quantized
// weight "<stem>.weight" has its scales in "<stem>.scale" (Checkpoint).
#ifndef MOESERVE_RUNTIME_MODEL_DEEPSEEK_V4_WEIGHTS_H_
#define MOESERVE_RUNTIME_MODEL_DEEPSEEK_V4_WEIGHTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/model/config.h"

namespace moeserve {

// How a tensor may be stored.
enum class V4TensorKind : uint8_t {
  kFloat,      // F32 or BF16: norms, embedding, head, router gate, compressor
               // projections, indexer weights_proj, hc_*, attn_sink, ape, bias
  kFp8Linear,  // F8_E4M3 with 128x128 block scales (F32 or BF16 also read)
  kExpert,     // routed expert: FP4 (I8) or F8_E4M3 as expert_dtype says
  kExpertIds,  // ffn.gate.tid2eid: I64 (or I32) expert ids < n_routed_experts
};

struct V4Tensor {
  std::string name;
  std::vector<int64_t> shape;  // as the math uses it: [out, in] for a matrix
  V4TensorKind kind = V4TensorKind::kFloat;
  // The layer (MTP module K is layer num_hidden_layers + K); -1 for the
  // embedding, head, final norm and hc_head_*.
  int64_t layer = -1;
  // Part of an MTP module ("mtp.K."): serving without speculative decoding
  // skips these on purpose; they are still checked.
  bool mtp = false;
};

// Every tensor the config implies, scales not listed (they follow their
// weights), in a fixed order: embed, layers, MTP modules, head, norm, hc_head.
std::vector<V4Tensor> DeepseekV4Tensors(const ModelConfig& config);

// Checks `checkpoint` against DeepseekV4Tensors(config): each tensor present
// with its shape and a dtype its kind allows (Checkpoint::CheckWeight, so
// scales too), expert ids in range (Checkpoint::ReadIds), and every tensor
// of the checkpoint one of them or a scale of one; an unknown name is an
// error listing the unknown names. Returns the number of checkpoint tensors
// (weights, scales and tables) accounted for.
absl::StatusOr<int64_t> CheckDeepseekV4Checkpoint(Checkpoint& checkpoint,
                                                  const ModelConfig& config);

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_MODEL_DEEPSEEK_V4_WEIGHTS_H_
