#include "tests/scheduler/tokenizer/tokenizer_test_util.h"

#include <unistd.h>

#include <cstdio>
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

namespace {

std::string RunCommand(const std::string& command, int* exit_code) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    *exit_code = -1;
    return out;
  }
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  *exit_code = pclose(pipe);
  return out;
}

uint64_t Fnv1a(std::string_view s, uint64_t h = 0xcbf29ce484222325ULL) {
  for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ULL;
  return h;
}

}  // namespace

JsReference RunJsReference(const std::string& tokenizer, const std::string& corpus,
                           bool random_strings) {
  using nlohmann::json;
  JsReference r;
  const std::string script =
      std::string(MOESERVE_SOURCE_DIR) + "/tests/scheduler/tokenizer/reference_ids.mjs";
  const std::string models = TokenizerDir(tokenizer);
  uint64_t key = Fnv1a(tokenizer + (random_strings ? "+random" : ""));
  for (const std::string& file :
       {script, corpus, models + "/tokenizer.json", models + "/tokenizer_config.json",
        NodeModulesDir() + "/@lenml/tokenizers/package.json"}) {
    key = Fnv1a(ReadTextFile(file), key);
  }
  const std::string cache = std::string(MOESERVE_BINARY_DIR) +
                            "/tests/scheduler/tokenizer/reference-" + tokenizer + "-" +
                            std::to_string(key) + ".json";
  r.data = json::parse(ReadTextFile(cache), nullptr, /*allow_exceptions=*/false);
  if (!r.data.is_discarded()) return r;

  int code = 0;
  const std::string node = RunCommand("command -v node", &code);
  if (code != 0 || node.empty()) {
    r.error =
        "node is not on PATH. These tests compare against the JavaScript reference "
        "implementation and need Node.js (tools/setup.sh installs it).";
    return r;
  }
  const std::string err = ::testing::TempDir() + "/reference_ids_" + tokenizer + "_" +
                          std::to_string(getpid()) + ".stderr";
  const std::string out =
      RunCommand("node " + script + " " + NodeModulesDir() + " " + tokenizer +
                     (random_strings ? " " : " --no-random ") + corpus + " 2>" + err,
                 &code);
  if (code != 0) {
    r.error = "reference_ids.mjs failed (exit status " + std::to_string(code) +
              "); did tools/setup.sh install the npm packages into " + NodeModulesDir() + "?\n" +
              ReadTextFile(err);
    return r;
  }
  r.data = json::parse(out, nullptr, /*allow_exceptions=*/false);
  if (r.data.is_discarded()) {
    r.error = "reference_ids.mjs printed no valid JSON";
    return r;
  }
  // Written whole, then renamed: a test running beside this one reads no
  // file or the whole file, never half of it.
  const std::string tmp = cache + "." + std::to_string(getpid());
  std::ofstream(tmp, std::ios::binary) << out;
  std::rename(tmp.c_str(), cache.c_str());
  return r;
}

}  // namespace moeserve::testing
