// Loaders of the architectures, one file each. Only model.cc calls these.
#ifndef MOESERVE_RUNTIME_MODEL_ARCHITECTURES_H_
#define MOESERVE_RUNTIME_MODEL_ARCHITECTURES_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model/model.h"

namespace moeserve {

absl::StatusOr<std::unique_ptr<Model>> LoadDeepseekV3(Checkpoint& checkpoint,
                                                      const ModelConfig& config,
                                                      const WeightSelection& selection, Ops& ops,
                                                      const ModelOptions& options);
absl::StatusOr<std::unique_ptr<Model>> LoadQwen3Moe(Checkpoint& checkpoint,
                                                    const ModelConfig& config,
                                                    const WeightSelection& selection, Ops& ops,
                                                    const ModelOptions& options);

// Shared by the architectures: final RMSNorm and lm_head on the rows whose
// logits are wanted. hidden: [T, hidden]; returns [rows.size(), vocab].
Tensor ComputeLogits(Ops& ops, ConstMatView hidden, const Tensor& final_norm, const Tensor& lm_head,
                     std::span<const int64_t> rows, float eps);

// Reads a tensor of the given shape, in float32.
absl::Status ReadWeight(Checkpoint& checkpoint, const std::string& name, std::vector<int64_t> shape,
                        Tensor* out);

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_MODEL_ARCHITECTURES_H_
