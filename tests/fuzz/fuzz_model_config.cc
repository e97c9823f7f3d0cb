// Fuzzes config.json: parsed as the checkpoint reads it (ParseBoundedJson), then
// ParseModelConfig. A config that validates must give the derived values the
// model builds from (KV cache widths and rows, softmax scale, which layers
// are MoE) without overflow or any other undefined behavior.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "runtime/checkpoint/bounded_json.h"
#include "runtime/model/config.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using moeserve::fuzz::Require;
  // Read as the checkpoint reads config.json.
  auto json =
      moeserve::ParseBoundedJson(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!json.ok()) return 0;
  auto config = moeserve::ParseModelConfig(*json);
  if (!config.ok()) return 0;
  Require(config->kv_cache_width() > 0);
  for (auto dtype : {moeserve::KvCacheDtype::kF32, moeserve::KvCacheDtype::kBF16,
                     moeserve::KvCacheDtype::kFP8E4M3}) {
    const moeserve::KvRowLayout row = config->kv_cache_row(dtype);
    if (row.valid()) (void)row.row_bytes();
  }
  (void)config->softmax_scale();
  (void)config->qk_head_dim();
  const int64_t layers = std::min<int64_t>(config->num_hidden_layers, 4096);
  for (int64_t layer = 0; layer < layers; ++layer) (void)config->IsMoeLayer(layer);
  (void)config->IsEos(0);
  return 0;
}
