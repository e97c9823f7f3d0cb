#include "runtime/worker/model_info.h"

#include <filesystem>

namespace moeserve {

std::string WeightDtype(const nlohmann::json& config_json) {
  const auto q = config_json.find("quantization_config");
  if (q != config_json.end() && q->is_object()) {
    const auto method = q->find("quant_method");
    if (method != q->end() && method->is_string()) return method->get<std::string>();
  }
  const auto dtype = config_json.find("torch_dtype");
  if (dtype == config_json.end() || !dtype->is_string()) return "unknown";
  const std::string name = dtype->get<std::string>();
  if (name == "bfloat16") return "bf16";
  if (name == "float16") return "f16";
  if (name == "float32") return "f32";
  return name;
}

v1::ModelInfo DescribeModel(const ModelConfig& config, const nlohmann::json& config_json,
                            const std::string& model_dir) {
  v1::ModelInfo info;
  info.set_model_type(config.model_type);
  std::filesystem::path dir(model_dir);
  if (!dir.has_filename()) dir = dir.parent_path();  // "models/x/" names x
  info.set_model_name(dir.filename().string());
  info.set_vocab_size(static_cast<uint32_t>(config.vocab_size));
  info.set_max_context_tokens(static_cast<uint32_t>(config.max_position_embeddings));
  info.set_num_layers(static_cast<uint32_t>(config.num_hidden_layers));
  info.set_num_routed_experts(static_cast<uint32_t>(config.n_routed_experts));
  info.set_experts_per_token(static_cast<uint32_t>(config.num_experts_per_tok));
  info.set_weight_dtype(WeightDtype(config_json));
  for (int64_t id : config.eos_token_ids) info.add_eos_token_ids(static_cast<uint32_t>(id));
  return info;
}

}  // namespace moeserve
