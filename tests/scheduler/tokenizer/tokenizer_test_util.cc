#include "tests/scheduler/tokenizer/tokenizer_test_util.h"

#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "gtest/gtest.h"

namespace moeserve::testing {

const Tokenizer* SharedTokenizer(const std::string& name) {
  static std::mutex mu;
  static auto* loaded = new std::map<std::string, std::unique_ptr<Tokenizer>>;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = (*loaded)[name];
  if (slot == nullptr) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::Load(TokenizerDir(name));
    if (!t.ok()) {
      ADD_FAILURE() << "cannot load the published " << name << " tokenizer: " << t.status()
                    << "\nRun tools/setup.sh: it installs the tokenizer files into "
                    << NodeModulesDir();
      return nullptr;
    }
    slot = *std::move(t);
  }
  return slot.get();
}

std::string ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace moeserve::testing
