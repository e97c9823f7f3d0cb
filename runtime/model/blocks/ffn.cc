#include "runtime/model/blocks/ffn.h"

#include <vector>

#include "runtime/model/architectures.h"

namespace moeserve {

absl::StatusOr<FfnWeights> LoadFfn(const WeightReader& reader, const std::string& prefix,
                                   int64_t hidden, int64_t inter) {
  FfnWeights w;
  const std::vector<int64_t> in_shape = {inter, hidden};
  const std::vector<int64_t> out_shape = {hidden, inter};
  absl::Status s =
      ReadWeight(reader, prefix + ".gate_proj.weight", in_shape, WeightUse::kMatrix, &w.gate);
  if (s.ok()) {
    s = ReadWeight(reader, prefix + ".up_proj.weight", in_shape, WeightUse::kMatrix, &w.up);
  }
  if (s.ok()) {
    s = ReadWeight(reader, prefix + ".down_proj.weight", out_shape, WeightUse::kMatrix, &w.down);
  }
  if (!s.ok()) return s;
  return w;
}

}  // namespace moeserve
