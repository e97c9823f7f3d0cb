// Fuzzes tokenizer.json, tokenizer_config.json and the text encoded: the
// input's parts, split at "----" lines (an absent config is "{}", an absent
// text a fixed one mixing scripts, digits, whitespace and the special tokens
// of the published models). A tokenizer that loads must encode the text to
// ids of its vocabulary, decode them, and decode every id of its vocabulary,
// without crashing.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "scheduler/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

constexpr char kText[] =
    "Hello, world! 12345 67 \t\n\n  indented\r\n"
    "<｜begin▁of▁sentence｜><|im_start|>user<think>x</think><|im_end|>"
    "Grüße, 你好, こんにちは, Привет, مرحبا 🙂🙂 é (e + U+0301: é) ﬁ";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using moeserve::fuzz::Require;
  auto [tokenizer_json, rest] = moeserve::fuzz::SplitInput(data, size);
  auto [config, text] =
      moeserve::fuzz::SplitInput(reinterpret_cast<const uint8_t*>(rest.data()), rest.size());
  if (config.empty()) config = "{}";
  if (text.empty()) text = kText;
  auto tokenizer = moeserve::Tokenizer::FromJson(tokenizer_json, config, "fuzz/");
  if (!tokenizer.ok()) return 0;
  for (bool special : {false, true}) {
    auto ids = (*tokenizer)->Encode(text, special);
    if (!ids.ok()) continue;
    for (int32_t id : *ids) Require(id >= 0 && id < (*tokenizer)->vocab_size());
    (void)(*tokenizer)->Decode(*ids, {});
  }
  // A vocabulary of the fuzzer's size: every id decodes, alone.
  const int32_t vocab = std::min<int32_t>((*tokenizer)->vocab_size(), 4096);
  for (int32_t id = 0; id < vocab; ++id) {
    const int32_t one[] = {id};
    Require((*tokenizer)->Decode(one, {}).ok());
    (void)(*tokenizer)->IdToToken(id);
  }
  return 0;
}
