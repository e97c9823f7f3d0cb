// Small random checkpoints in exactly the published Hugging Face layout of
// each architecture: the same tensor names, dtypes, FP8 scale layout
// (128x128 blocks, partial blocks at the edges), the MTP module's tensors,
// config.json with every field the real model has, an index and several
// shards, and the published tokenizer files with a vocabulary (and BOS/EOS
// ids) to match. Every path a full-size checkpoint takes is exercised on
// these.
#ifndef MOESERVE_TOOLS_TINY_MODEL_TINY_MODEL_H_
#define MOESERVE_TOOLS_TINY_MODEL_TINY_MODEL_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace moeserve {

enum class TinyArch { kDeepseekV3, kKimiK2, kQwen3Moe };
enum class TinyDtype { kBf16, kFp8 };
// kTiny: a few MB, for tests. kSmall (deepseek_v3 only): hidden 1024, 64
// routed experts, top-6, for CPU benchmarks.
enum class TinySize { kTiny, kSmall };

absl::StatusOr<TinyArch> ParseTinyArch(const std::string& name);    // deepseek_v3|kimi_k2|qwen3_moe
absl::StatusOr<TinyDtype> ParseTinyDtype(const std::string& name);  // bf16|fp8

// The cache tools/setup.sh fills: $MOESERVE_CACHE_DIR, else
// $XDG_CACHE_HOME/moeserve, else $HOME/.cache/moeserve (as setup.sh has it).
std::string MoeserveCacheDir();

// Where tools/setup.sh puts the published tokenizer files (tokenizer.json and
// tokenizer_config.json) of `arch`: DeepSeek-V3's for deepseek_v3 and kimi_k2,
// Qwen3's for qwen3_moe.
std::string DefaultTokenizerDir(TinyArch arch);

struct TinyModelOptions {
  TinyArch arch = TinyArch::kDeepseekV3;
  TinyDtype dtype = TinyDtype::kBf16;
  TinySize size = TinySize::kTiny;
  std::string out_dir;  // created if missing; existing model files are overwritten
  uint64_t seed = 0;
  int num_shards = 3;  // >= 1; 1 writes a single model.safetensors and no index
  // Decoder layers of a deepseek_v3 model (the first dense, the rest MoE);
  // 0 keeps the size's own (3 tiny, 4 small). Benchmarks of the overlap
  // want more MoE layers per step.
  int num_layers = 0;
  // Holds the tokenizer.json and tokenizer_config.json copied into a kTiny
  // model; empty: DefaultTokenizerDir(arch). (kSmall models get no
  // tokenizer: their vocabulary is smaller than one.)
  std::string tokenizer_dir;
};

absl::Status MakeTinyModel(const TinyModelOptions& options);

}  // namespace moeserve

#endif  // MOESERVE_TOOLS_TINY_MODEL_TINY_MODEL_H_
