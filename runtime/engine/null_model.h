// A model that computes nothing, for measuring the serving path alone
// (`moeserve-worker --null-model-for-benchmarks`): no weights are read, no
// layer runs, no rank exchanges anything. Each logit row peaks at one token
// that depends only on the row's token and position, so greedy decoding is
// deterministic and every request sees the same tokens whatever the batch.
// Its outputs mean nothing: a worker must be asked for it by name.
#ifndef MOESERVE_RUNTIME_ENGINE_NULL_MODEL_H_
#define MOESERVE_RUNTIME_ENGINE_NULL_MODEL_H_

#include <memory>

#include "runtime/model/model.h"

namespace moeserve {

// The token a null model's logits favour after `token` at `position`.
int32_t NullModelToken(int32_t token, int64_t position, int64_t vocab_size);

// Validates batches as a real model does (ids, slices, block tables) and
// returns [logit_rows, vocab] logits: 0, and 16 at NullModelToken of the row.
std::unique_ptr<Model> CreateNullModel(const ModelConfig& config);

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_ENGINE_NULL_MODEL_H_
