// DeepSeek-V4 (V4-Flash, V4-Pro): the architecture's model code lives here.
// What exists so far is issue 16's first item: the config (ModelConfig::v4,
// deepseek_v4_config.h) and the checkpoint in its published formats
// (deepseek_v4_weights.h, Checkpoint's FP8/E8M0 and FP4 reading). The
// forward pass (windowed and compressed attention, mHC, hash and
// sqrt-softplus routing) is not implemented: a V4 checkpoint is read and
// checked, then refused with that reason.
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/model/architectures.h"
#include "runtime/model/deepseek_v4_weights.h"

namespace moeserve {

absl::Status RefuseDeepseekV4(Checkpoint& checkpoint, const ModelConfig& config) {
  auto tensors = CheckDeepseekV4Checkpoint(checkpoint, config);
  if (!tensors.ok()) return tensors.status();
  return absl::UnimplementedError(absl::StrCat(
      checkpoint.dir(), ": DeepSeek-V4 checkpoint and config.json read and checked (", *tensors,
      " tensors: every weight, scale and hash-routing table the config implies, MTP included), "
      "but the DeepSeek-V4 forward pass is not implemented yet (issue 16), so moeserve cannot "
      "serve this model"));
}

}  // namespace moeserve
