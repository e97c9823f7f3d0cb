// The moeserve binary, run as a user runs it.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace moeserve {
namespace {

using ::testing::HasSubstr;

struct CliRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

CliRun Moeserve(const std::string& args) {
  const std::string cmd =
      std::string(MOESERVE_BINARY_DIR) + "/tools/moeserve/moeserve " + args + " 2>&1";
  CliRun run;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return run;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) run.output.append(buf.data(), n);
  const int status = pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

const std::string kFixture = std::string(MOESERVE_FIXTURES_DIR) + "/deepseek_v3_small_bf16";

TEST(MoeserveCliTest, GenerateJsonMatchesTheReference) {
  std::ifstream in(kFixture + "/golden.json");
  const auto golden = nlohmann::json::parse(in).at("cases")[0];
  std::string ids;
  for (int id : golden.at("prompt_ids")) ids += (ids.empty() ? "" : ",") + std::to_string(id);
  CliRun r = Moeserve("generate --model " + kFixture + " --prompt-ids " + ids +
                      " --max-tokens 2 --prompt-logprobs --ignore-eos --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto out = nlohmann::json::parse(r.output);
  const auto& plp = out.at("prompt_logprobs");
  ASSERT_EQ(plp.size(), golden.at("prompt_ids").size());
  EXPECT_TRUE(plp[0].is_null());
  // Same arithmetic as the golden model test; see its tolerance.
  for (size_t i = 1; i < plp.size(); ++i) {
    EXPECT_NEAR(plp[i].get<double>(),
                golden.at("positions")[i - 1].at("next_logprob").get<double>(), 5e-5);
  }
  ASSERT_EQ(out.at("tokens").size(), 2u);
  for (size_t t = 0; t < 2; ++t) {  // both reference margins are > 0.1
    EXPECT_EQ(out.at("tokens")[t].at("id"), golden.at("greedy")[t].at("id"));
    EXPECT_NEAR(out.at("tokens")[t].at("logprob").get<double>(),
                golden.at("greedy")[t].at("logprob").get<double>(), 5e-5);
  }
  EXPECT_EQ(out.at("finish_reason"), "length");
}

TEST(MoeserveCliTest, MakeTinyModelThenGenerate) {
  const std::string dir = ::testing::TempDir() + "/cli_tiny_qwen3";
  CliRun made = Moeserve("make-tiny-model --arch qwen3_moe --dtype fp8 --seed 5 --out " + dir);
  ASSERT_EQ(made.exit_code, 0) << made.output;
  CliRun gen = Moeserve("generate --model " + dir +
                        " --prompt-ids 1,2,3 --max-tokens 5 --temperature 0.8 --top-k 50 --seed 9 "
                        "--ignore-eos --json");
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  EXPECT_EQ(nlohmann::json::parse(gen.output).at("tokens").size(), 5u);
  CliRun again =
      Moeserve("generate --model " + dir +
               " --prompt-ids 1,2,3 --max-tokens 5 --temperature 0.8 --top-k 50 --seed 9 "
               "--ignore-eos --json");
  EXPECT_EQ(gen.output, again.output) << "the same seed gives the same tokens";
}

TEST(MoeserveCliTest, BadInvocationsExplainThemselves) {
  struct Case {
    std::string args;
    int exit_code;
    std::string message;
  };
  const Case cases[] = {
      {"", 2, "Usage: moeserve <command>"},
      {"frobnicate", 2, "unknown command \"frobnicate\""},
      {"generate --prompt-ids 1", 2, "--model is required"},
      {"generate --model " + kFixture, 2, "--prompt-ids is required"},
      {"generate --model " + kFixture + " --prompt-ids 1,x", 2, "\"x\" in the id list"},
      {"generate --model " + kFixture + " --prompt-ids 1 --bogus 3", 2, "unknown flag --bogus"},
      {"generate --model " + kFixture + " --prompt-ids 1 --temperature hot", 2,
       "--temperature must be a number"},
      {"generate --model " + kFixture + " --prompt-ids 5000", 2,
       "outside the vocabulary [0, 1000)"},
      {"generate --model /nonexistent/model --prompt-ids 1", 1, "/nonexistent/model"},
      {"make-tiny-model --arch llama --dtype bf16 --out /tmp/x", 2,
       "deepseek_v3, kimi_k2, qwen3_moe"},
      {"make-tiny-model --arch qwen3_moe --dtype int4 --out /tmp/x", 2, "bf16"},
  };
  for (const Case& c : cases) {
    CliRun r = Moeserve(c.args);
    EXPECT_EQ(r.exit_code, c.exit_code) << c.args << "\n" << r.output;
    EXPECT_THAT(r.output, HasSubstr(c.message)) << c.args;
  }
  CliRun help = Moeserve("generate --help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.output, HasSubstr("--prompt-logprobs"));
}

}  // namespace
}  // namespace moeserve

namespace moeserve {
namespace {

TEST(MoeservePlacementCliTest, BalancesATraceAndExplainsBadInput) {
  const std::string trace = ::testing::TempDir() + "/placement_trace.json";
  std::ofstream(trace) << R"({"experts": 8, "layers": {"1": [80, 10, 10, 10, 10, 10, 10, 20]}})";
  const std::string out = ::testing::TempDir() + "/placement.json";
  CliRun run =
      Moeserve("placement --trace " + trace + " --ep-size 2 --redundant-experts 2 --out " + out);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, HasSubstr("layer 1: balancedness"));
  std::ifstream in(out);
  const auto placement = nlohmann::json::parse(in);
  EXPECT_EQ(placement.at("ranks"), 2);
  EXPECT_EQ(placement.at("slots_per_rank"), 5);
  EXPECT_EQ(placement.at("layers").at("1").size(), 10u);

  std::ofstream(trace) << R"({"experts": 8, "layers": {"1": [1, 2]}})";
  run = Moeserve("placement --trace " + trace + " --ep-size 2");
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_THAT(run.output, HasSubstr("2 counts for 8 experts"));
  run = Moeserve("placement --ep-size 2");
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_THAT(run.output, HasSubstr("exactly one of --trace FILE and --server ADDR"));
}

}  // namespace
}  // namespace moeserve
