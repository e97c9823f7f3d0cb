// SiLU-gated feed-forward weights: the dense MLP, each routed expert and the
// shared experts all have this shape.
#ifndef MOESERVE_RUNTIME_MODEL_BLOCKS_FFN_H_
#define MOESERVE_RUNTIME_MODEL_BLOCKS_FFN_H_

#include <string>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/model/weight_reader.h"

namespace moeserve {

struct FfnWeights {
  Tensor gate;  // [inter, hidden]
  Tensor up;    // [inter, hidden]
  Tensor down;  // [hidden, inter]

  bool loaded() const { return !gate.empty(); }
};

// Reads "<prefix>.{gate,up,down}_proj.weight" into the reader's backend.
absl::StatusOr<FfnWeights> LoadFfn(const WeightReader& reader, const std::string& prefix,
                                   int64_t hidden, int64_t inter);

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_MODEL_BLOCKS_FFN_H_
