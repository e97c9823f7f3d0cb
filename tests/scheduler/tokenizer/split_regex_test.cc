// Pre-tokenizer regexes: the Oniguruma-to-RE2 translation, its refusals, and
// the exactness of the lookahead-free `\s+(?!\S)|\s+` against a backtracking
// engine that has lookahead (JavaScript's, run by split_reference.mjs), on
// every short string over small alphabets, for the published patterns.
#include "scheduler/tokenizer/split_regex.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/scheduler/tokenizer/tokenizer_test_util.h"

namespace moeserve {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

constexpr char kGpt2[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::vector<std::string> Matches(const SplitRegex& re, const std::string& text) {
  std::vector<std::string> out;
  re.ForEachMatch(text, [&](size_t b, size_t e) { out.push_back(text.substr(b, e - b)); });
  return out;
}

TEST(SplitRegexTest, TranslatesOnigurumaClassesToTheirUnicodeMeaning) {
  auto t = TranslateOnigurumaPattern(R"(\s\S\d\D\w\W[^\s\d\w]\h)");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->re2, R"([\t\n\x{0B}\f\r\x{85}\p{Z}][^\t\n\x{0B}\f\r\x{85}\p{Z}]\p{Nd}\P{Nd})"
                    R"([\p{L}\p{M}\p{N}\p{Pc}][^\p{L}\p{M}\p{N}\p{Pc}])"
                    R"([^\t\n\x{0B}\f\r\x{85}\p{Z}\p{Nd}\p{L}\p{M}\p{N}\p{Pc}][0-9a-fA-F])");
  EXPECT_FALSE(t->whitespace_lookahead_tail);
}

TEST(SplitRegexTest, TranslatesGroupsFlagsAndAnchors) {
  auto t = TranslateOnigurumaPattern(R"((a)(?<n>b)(?:c)(?i:d)(?m:.)^x$)");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->re2, R"((?:a)(?:b)(?:c)(?i:d)(?s:.)(?m:^)x(?m:$))");
  auto tail = TranslateOnigurumaPattern(R"(a|\s+(?!\S)|\s+)");
  ASSERT_TRUE(tail.ok()) << tail.status();
  // The whole tail becomes one greedy group: `\s+` alone matches what it does.
  EXPECT_EQ(tail->re2, R"(a|([\t\n\x{0B}\f\r\x{85}\p{Z}]+))");
  EXPECT_TRUE(tail->whitespace_lookahead_tail);
}

TEST(SplitRegexTest, RefusesWhatWouldMeanSomethingElseNamingIt) {
  struct Case {
    std::string pattern;
    std::string message;
  };
  const Case cases[] = {
      {R"(a(?=b))", "lookaround"},
      {R"((?<!a)b)", "lookaround"},
      {R"(\s+(?!\S))", "lookaround"},          // no `|\s+` after it
      {R"((?:\s+(?!\S)|\s+))", "lookaround"},  // not at the top level
      {R"((?>ab))", "atomic group"},
      {R"(a++)", "possessive quantifier"},
      {R"((a)\1)", "backreference"},
      {R"(\bword\b)", "word boundary"},
      {R"([a[b]])", "nested character class"},
      {R"([a-z&&[^c]])", "intersection"},
      {R"([^\S])", "negated class \\S inside a character class"},
      {R"(\xff)", "byte escape"},
      {R"((?x) a)", "group flag 'x'"},
      {R"([abc)", "unterminated character class"},
  };
  for (const Case& c : cases) {
    auto t = SplitRegex::Create(c.pattern);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << c.pattern;
    EXPECT_THAT(t.status().message(), HasSubstr(c.message)) << c.pattern;
  }
  auto bad = SplitRegex::Create(R"(\p{NoSuchClass})");
  EXPECT_THAT(bad.status().message(), HasSubstr("does not compile"));
}

TEST(SplitRegexTest, WhitespaceIsOnigurumas) {
  EXPECT_TRUE(IsOnigurumaSpace(U'\u0085'));   // NEL: not in JavaScript's \s
  EXPECT_FALSE(IsOnigurumaSpace(U'\uFEFF'));  // BOM: in JavaScript's \s
  EXPECT_TRUE(IsOnigurumaSpace(U'\u3000'));
  EXPECT_TRUE(IsOnigurumaSpace(U'\u2029'));
  EXPECT_TRUE(IsOnigurumaSpace(U'\x0B'));
  EXPECT_FALSE(IsOnigurumaSpace(U'\u200B'));  // zero width space is a format character
  auto re = SplitRegex::Create(R"(\s+)");
  ASSERT_TRUE(re.ok());
  EXPECT_EQ(Matches(**re, "a\u0085\u00a0\u3000b\uFEFF"),
            (std::vector<std::string>{"\u0085\u00a0\u3000"}));
}

TEST(SplitRegexTest, CaseInsensitiveGroupsFoldAsUnicodeDoes) {
  // Oniguruma folds ſ (U+017F) to s; so does RE2.
  auto re = SplitRegex::Create(R"((?i:'s|'ll))");
  ASSERT_TRUE(re.ok());
  EXPECT_EQ(Matches(**re, "'s 'S 'ſ 'Ll 't"), (std::vector<std::string>{"'s", "'S", "'ſ", "'Ll"}));
}

TEST(SplitRegexTest, LookaheadTailGivesBackTheLastSpaceBeforeAWord) {
  auto re = SplitRegex::Create(kGpt2);
  ASSERT_TRUE(re.ok());
  EXPECT_EQ(Matches(**re, "a   b"), (std::vector<std::string>{"a", "  ", " b"}));
  EXPECT_EQ(Matches(**re, "a   "), (std::vector<std::string>{"a", "   "}));
  EXPECT_EQ(Matches(**re, "a \tb"), (std::vector<std::string>{"a", " ", "\t", "b"}));
  EXPECT_EQ(Matches(**re, "x\u3000\u3000y"),
            (std::vector<std::string>{"x", "\u3000", "\u3000", "y"}));
}

std::string RunNode(const std::string& args, int* code) {
  std::string out;
  FILE* pipe = popen(("node " + args).c_str(), "r");
  if (pipe == nullptr) {
    *code = -1;
    return out;
  }
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  *code = pclose(pipe);
  return out;
}

std::string PublishedPattern(const std::string& tokenizer, int index) {
  const json j =
      json::parse(testing::ReadTextFile(testing::TokenizerDir(tokenizer) + "/tokenizer.json"),
                  nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return "";
  return j["pre_tokenizer"]["pretokenizers"][index]["pattern"]["Regex"].get<std::string>();
}

TEST(SplitRegexTest, PublishedPatternsMatchAsABacktrackingEngineWithLookahead) {
  const std::vector<std::string> patterns = {kGpt2, PublishedPattern("qwen3", 0),
                                             PublishedPattern("deepseek_v3", 2)};
  for (const std::string& p : patterns) {
    ASSERT_FALSE(p.empty()) << "run tools/setup.sh to install the tokenizer files";
    ASSERT_NE(p.find(R"(\s+(?!\S)|\s+)"), std::string::npos) << p;
  }
  const std::string file = ::testing::TempDir() + "/split_patterns_" + std::to_string(getpid());
  std::ofstream(file) << json(patterns).dump();
  int code = 0;
  const std::string out = RunNode(
      std::string(MOESERVE_SOURCE_DIR) + "/tests/scheduler/tokenizer/split_reference.mjs " + file,
      &code);
  std::remove(file.c_str());
  ASSERT_EQ(code, 0) << "node failed or is not on PATH (the test needs Node.js; tools/setup.sh "
                        "installs it)";
  const json reference = json::parse(out);
  const auto texts = reference.at("texts").get<std::vector<std::string>>();
  ASSERT_GT(texts.size(), 30000u);
  for (size_t p = 0; p < patterns.size(); ++p) {
    auto re = SplitRegex::Create(patterns[p]);
    ASSERT_TRUE(re.ok()) << re.status();
    ASSERT_TRUE((*re)->re2_pattern().find('(') != std::string::npos);
    int failures = 0;
    for (size_t i = 0; i < texts.size() && failures < 10; ++i) {
      const auto expected = reference["matches"][p][i].get<std::vector<std::string>>();
      const std::vector<std::string> ours = Matches(**re, texts[i]);
      if (ours != expected) {
        ++failures;
        ADD_FAILURE() << "pattern " << p << " text " << json(texts[i]).dump()
                      << "\n  ours:      " << json(ours).dump()
                      << "\n  reference: " << json(expected).dump();
      }
    }
  }
}

}  // namespace
}  // namespace moeserve
