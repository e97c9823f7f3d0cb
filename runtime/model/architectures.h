// Loaders of the architectures, one file each. Only model.cc calls these.
#ifndef MOESERVE_RUNTIME_MODEL_ARCHITECTURES_H_
#define MOESERVE_RUNTIME_MODEL_ARCHITECTURES_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/model/model.h"
#include "runtime/model/weight_reader.h"

namespace moeserve {

absl::StatusOr<std::unique_ptr<Model>> LoadDeepseekV3(Checkpoint& checkpoint,
                                                      const ModelConfig& config,
                                                      const WeightSelection& selection,
                                                      Backend& backend,
                                                      const ModelOptions& options);
absl::StatusOr<std::unique_ptr<Model>> LoadQwen3Moe(Checkpoint& checkpoint,
                                                    const ModelConfig& config,
                                                    const WeightSelection& selection,
                                                    Backend& backend, const ModelOptions& options);

// DeepSeek-V4 (deepseek_v4.cc): checks the checkpoint against the config
// and says that the forward pass is not implemented yet (CheckServable).
absl::Status RefuseDeepseekV4(Checkpoint& checkpoint, const ModelConfig& config);

// Reads a tensor of the given shape into the reader's backend, in the dtype
// that backend takes for `use` (float32 on the CPU).
absl::Status ReadWeight(const WeightReader& reader, const std::string& name,
                        std::vector<int64_t> shape, WeightUse use, Tensor* out);

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_MODEL_ARCHITECTURES_H_
