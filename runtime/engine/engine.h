// A single-process engine: one checkpoint, the CPU op set, a paged KV cache,
// and a generation loop that batches its requests continuously (every step
// carries one decode token per running sequence, then prefill chunks up to
// the step's token budget).
//
// This is the engine the CLI's `generate --model` and the tests drive; the
// serving path splits the same pieces between coordinator and workers.
#ifndef MOESERVE_RUNTIME_ENGINE_ENGINE_H_
#define MOESERVE_RUNTIME_ENGINE_ENGINE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/engine/model_runner.h"
#include "runtime/engine/step_executor.h"
#include "runtime/kv_cache/paged_kv_cache.h"
#include "runtime/model/model.h"

namespace moeserve {

struct EngineOptions {
  std::string model_dir;
  int64_t kv_cache_tokens = 16384;  // capacity, rounded up to whole blocks
  int64_t kv_block_tokens = kDefaultKvBlockTokens;
  int64_t max_batch_tokens = 2048;  // tokens per forward pass; longer prompts prefill in chunks
  ModelOptions model;
  KvCacheDtypeChoice kv_cache_dtype;  // --kv-cache-dtype (auto: fp32 on the CPU)
  DeviceId device;                    // --device: where the model runs
};

struct GenerateRequest {
  std::vector<int32_t> prompt_ids;  // non-empty, inside the vocabulary
  int64_t max_tokens = 16;
  SamplingParams sampling;
  bool prompt_logprobs = false;
  bool ignore_eos = false;
};

using GeneratedToken = TokenLogprob;

enum class FinishReason { kLength, kStop };

struct GenerateResult {
  // prompt_logprobs[i]: log-probability of prompt token i given the tokens
  // before it; empty optional for i = 0. Empty vector unless requested.
  std::vector<std::optional<float>> prompt_logprobs;
  std::vector<GeneratedToken> tokens;
  FinishReason finish_reason = FinishReason::kLength;
};

// Not thread safe.
class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options);

  const ModelConfig& config() const { return runner_->config(); }

  // Runs all requests to completion, batched together. Fails (and returns
  // every KV block) if a request is invalid or the KV cache cannot hold the
  // running sequences.
  absl::StatusOr<std::vector<GenerateResult>> Generate(std::span<const GenerateRequest> requests);

 private:
  struct Sequence;
  Engine() = default;
  absl::Status CheckRequest(const GenerateRequest& request, size_t index) const;
  absl::Status Step(std::vector<Sequence>& seqs);

  EngineOptions options_;
  std::unique_ptr<ModelRunner> runner_;
  std::unique_ptr<BlockAllocator> blocks_;
};

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_ENGINE_ENGINE_H_
