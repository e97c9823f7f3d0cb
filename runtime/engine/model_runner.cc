#include "runtime/engine/model_runner.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/backend_factory.h"
#include "kernels/cpu/cpu_ops.h"
#include "runtime/engine/null_model.h"

namespace moeserve {

absl::StatusOr<std::unique_ptr<ModelRunner>> ModelRunner::Create(const Options& options) {
  if (options.kv_cache_tokens <= 0 || options.kv_block_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the KV cache needs a positive size and block size, got ",
                     options.kv_cache_tokens, " tokens in blocks of ", options.kv_block_tokens));
  }
  auto runner = std::unique_ptr<ModelRunner>(new ModelRunner());
  auto backend = CreateBackend(options.device);
  if (!backend.ok()) return backend.status();
  runner->backend_ = *std::move(backend);
  runner->host_ops_ = CreateCpuOps();
  auto checkpoint = Checkpoint::Open(options.model_dir);
  if (!checkpoint.ok()) return checkpoint.status();
  runner->checkpoint_ = *std::move(checkpoint);
  if (options.null_model) {
    auto config = ParseModelConfig(runner->checkpoint_->config_json());
    if (!config.ok()) return config.status();
    // A null model still sizes its KV cache from the config's architecture.
    if (absl::Status s = CheckServable(*runner->checkpoint_, *config); !s.ok()) return s;
    runner->model_ = CreateNullModel(*config);
  } else {
    auto model =
        LoadModel(*runner->checkpoint_, WeightSelection{}, *runner->backend_, options.model);
    if (!model.ok()) return model.status();
    runner->model_ = *std::move(model);
  }
  const ModelConfig& c = runner->model_->config();
  PagedKvCache::Options cache_options;
  cache_options.num_layers = c.num_hidden_layers;
  cache_options.block_size = options.kv_block_tokens;
  cache_options.num_blocks = CeilDiv(options.kv_cache_tokens, options.kv_block_tokens);
  cache_options.set_row(c.kv_cache_row(ResolveKvCacheDtype(
      options.kv_cache_dtype,
      options.device.kind == DeviceKind::kCuda ? KvCacheDevice::kCuda : KvCacheDevice::kCpu)));
  auto cache = PagedKvCache::Create(cache_options, runner->backend_.get());
  if (!cache.ok()) return cache.status();
  runner->cache_ = *std::move(cache);
  runner->executor_ =
      std::make_unique<StepExecutor>(*runner->model_, *runner->cache_, *runner->host_ops_);
  return runner;
}

}  // namespace moeserve
