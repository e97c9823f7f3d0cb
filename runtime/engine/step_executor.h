// Runs one step of plain per-sequence work on a model and its KV cache:
// builds the ragged batch, runs the forward pass, and turns the logits into
// sampled tokens and log-probabilities. The single-process Engine and the
// worker process (one StepPlan per step) both drive the model through it.
#ifndef MOESERVE_RUNTIME_ENGINE_STEP_EXECUTOR_H_
#define MOESERVE_RUNTIME_ENGINE_STEP_EXECUTOR_H_

#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "runtime/kv_cache/paged_kv_cache.h"
#include "runtime/model/model.h"

namespace moeserve {

inline constexpr int32_t kMaxTopLogprobs = 20;

// Penalties on tokens the sequence has seen (inference.proto's Sampling),
// applied to the logits before sampling, in this order: the repetition
// penalty divides the positive logits (multiplies the negative ones) of
// every token of the prompt or the output, as in CTRL; then each token the
// sequence generated loses presence + frequency * (times generated). The
// reported log-probabilities stay those of the model's distribution.
struct Penalties {
  float repetition = 1.0f;
  float presence = 0.0f;
  float frequency = 0.0f;
  bool active() const { return repetition != 1.0f || presence != 0.0f || frequency != 0.0f; }
};

// Applies `p` to one row of logits, given the distinct tokens of the prompt
// and the count of each generated token (ids inside the row).
void ApplyPenalties(const Penalties& p, const std::unordered_set<int32_t>& prompt,
                    const std::unordered_map<int32_t, int32_t>& generated, std::span<float> logits);

// One sequence's share of a step (worker.proto's SequenceWork).
struct SequenceWork {
  uint64_t sequence_id = 0;
  std::vector<int32_t> token_ids;    // fed this step: a prefill chunk or one decode token
  int64_t context_len = 0;           // tokens in the cache after the step
  std::vector<int32_t> block_table;  // covers context_len
  bool sample = false;               // sample a token after the last fed one
  SamplingParams sampling;
  uint64_t draw_index = 0;   // keys the seeded draw: the index of the token being generated
  int32_t top_logprobs = 0;  // alternatives reported with the sampled token, 0..20
  // Report, for every fed position j, the log-probability of the token that
  // follows it: token_ids[j + 1], or `following_token` for the last position
  // (the first token of the next chunk; unset: nothing reported for it).
  bool prompt_logprobs = false;
  std::optional<int32_t> following_token;
  Penalties penalties;
  // Added to the sampled row's logits after the penalties (token id, bias).
  std::vector<std::pair<int32_t, float>> logit_bias;
  int64_t prompt_tokens = 0;  // fed positions below it are the prompt
  // With penalties, when the fed tokens do not follow what this executor was
  // last fed of the sequence: the tokens of every earlier position.
  std::vector<int32_t> history_tokens;
};

struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0.0f;  // under the unmodified model distribution
};

struct SequenceOutput {
  uint64_t sequence_id = 0;
  std::optional<TokenLogprob> sampled;
  std::vector<TokenLogprob> top;       // most likely first, when asked
  std::vector<float> prompt_logprobs;  // see SequenceWork::prompt_logprobs
};

// Not thread safe. Holds references: model, cache and ops must outlive it.
class StepExecutor {
 public:
  StepExecutor(Model& model, PagedKvCache& cache, Ops& ops)
      : model_(model), cache_(cache), ops_(ops) {}

  // Fails without sampling anything when the work is malformed (ids outside
  // the vocabulary, block tables too short, context beyond the model's).
  // group_max_tokens: in an expert-parallel group, the most tokens any rank
  // runs in this step (ForwardBatch::group_max_tokens); 0 if not known.
  absl::StatusOr<std::vector<SequenceOutput>> Run(std::span<const SequenceWork> work,
                                                  int64_t group_max_tokens = 0);

  // Whether the last Run got as far as the forward pass. In an expert-parallel
  // group a rank whose step failed before it must still join the step's
  // collectives, with Run({}).
  bool last_run_reached_forward() const { return reached_forward_; }

  // Whether Run would accept `w` as part of a step: its ids, block table,
  // context, log-probability and bias requests, and the token history its
  // penalties need. InvalidArgument naming what is wrong; nothing changes.
  // A step whose sequences all pass fails only for reasons no single
  // sequence causes (a step larger than the model's plan).
  absl::Status Check(const SequenceWork& w) const;

  // Forgets the token history kept for `ids` (sequences that ended).
  void Release(std::span<const uint64_t> ids);
  // Forgets every sequence's (a new group starts with none of them).
  void ReleaseAll() { history_.clear(); }
  // Sequences whose token history is kept (those with penalties).
  size_t sequences_with_history() const { return history_.size(); }

 private:
  // The tokens a sequence with penalties has fed, from position 0: the
  // prompt's as a set, the generated ones with their counts. A chunk that
  // starts at position 0 (a new or re-prefilled sequence) starts it over.
  struct History {
    int64_t next_position = 0;
    std::unordered_set<int32_t> prompt;
    std::unordered_map<int32_t, int32_t> generated;
  };
  // The logit biases and penalties of `w`, and whether the token history its
  // penalties need reaches its chunk. For Check and Run.
  absl::Status CheckSampling(const SequenceWork& w) const;
  // Adds the fed tokens of `w` (CheckSampling passed) to its history;
  // InvalidArgument for a fed token outside the vocabulary.
  absl::Status Record(const SequenceWork& w);

  Model& model_;
  PagedKvCache& cache_;
  Ops& ops_;
  bool reached_forward_ = false;
  std::unordered_map<uint64_t, History> history_;
};

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_ENGINE_STEP_EXECUTOR_H_
