// The description of a loaded model that a worker sends with its Register
// (moeserve.v1.ModelInfo): what the coordinator needs for admission and
// stopping, and what GetModelInfo shows to clients.
#ifndef MOESERVE_RUNTIME_WORKER_MODEL_INFO_H_
#define MOESERVE_RUNTIME_WORKER_MODEL_INFO_H_

#include <string>

#include "moeserve/v1/inference.pb.h"
#include "nlohmann/json.hpp"
#include "runtime/model/config.h"

namespace moeserve {

// `config_json` is the checkpoint's config.json (for the weight dtype),
// `model_dir` its directory (the model name is the directory's last
// component). world_size is left 0: the coordinator knows it.
v1::ModelInfo DescribeModel(const ModelConfig& config, const nlohmann::json& config_json,
                            const std::string& model_dir);

// "fp8" for DeepSeek's block-quantized e4m3 checkpoints, else torch_dtype in
// short form ("bf16", "f16", "f32"), or "unknown" when config.json says
// neither.
std::string WeightDtype(const nlohmann::json& config_json);

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_WORKER_MODEL_INFO_H_
