// Everything a process needs to run steps of one model on the CPU: the op
// set, the checkpoint, the loaded model, its paged KV cache and the step
// executor over them. The single-process Engine and the worker process each
// own one.
#ifndef MOESERVE_RUNTIME_ENGINE_MODEL_RUNNER_H_
#define MOESERVE_RUNTIME_ENGINE_MODEL_RUNNER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/ops.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/engine/step_executor.h"
#include "runtime/kv_cache/kv_cache_dtype.h"
#include "runtime/kv_cache/paged_kv_cache.h"
#include "runtime/model/model.h"

namespace moeserve {

class ModelRunner {
 public:
  struct Options {
    std::string model_dir;
    int64_t kv_cache_tokens = 16384;  // capacity, rounded up to whole blocks
    int64_t kv_block_tokens = kDefaultKvBlockTokens;
    ModelOptions model;
    // --kv-cache-dtype; auto resolves for the CPU op set (fp32).
    KvCacheDtypeChoice kv_cache_dtype;
    // Where the model runs: the CPU backend, or a CUDA device when built.
    DeviceId device;
    // Benchmarks of the serving path only: no weights, no forward pass
    // (runtime/engine/null_model.h); the KV cache is still allocated.
    bool null_model = false;
  };
  // Opens the checkpoint, loads the model and allocates the KV cache.
  // InvalidArgument for a non-positive cache size; checkpoint and model
  // errors as Checkpoint::Open and LoadModel give them.
  static absl::StatusOr<std::unique_ptr<ModelRunner>> Create(const Options& options);

  const ModelConfig& config() const { return model_->config(); }
  Model& model() { return *model_; }
  const Checkpoint& checkpoint() const { return *checkpoint_; }
  Backend& backend() { return *backend_; }
  PagedKvCache& cache() { return *cache_; }
  StepExecutor& executor() { return *executor_; }

 private:
  ModelRunner() = default;

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Ops> host_ops_;  // the step executor's sampling, on host logits
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<Model> model_;  // runs on backend_
  std::unique_ptr<PagedKvCache> cache_;
  std::unique_ptr<StepExecutor> executor_;  // over model_, cache_ and host_ops_
};

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_ENGINE_MODEL_RUNNER_H_
