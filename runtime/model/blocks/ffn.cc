#include "runtime/model/blocks/ffn.h"

namespace moeserve {

absl::StatusOr<FfnWeights> LoadFfn(Checkpoint& checkpoint, const std::string& prefix,
                                   int64_t hidden, int64_t inter) {
  FfnWeights w;
  const int64_t in_shape[] = {inter, hidden};
  const int64_t out_shape[] = {hidden, inter};
  auto gate = checkpoint.ReadF32(prefix + ".gate_proj.weight", in_shape);
  if (!gate.ok()) return gate.status();
  auto up = checkpoint.ReadF32(prefix + ".up_proj.weight", in_shape);
  if (!up.ok()) return up.status();
  auto down = checkpoint.ReadF32(prefix + ".down_proj.weight", out_shape);
  if (!down.ok()) return down.status();
  w.gate = *std::move(gate);
  w.up = *std::move(up);
  w.down = *std::move(down);
  return w;
}

}  // namespace moeserve
