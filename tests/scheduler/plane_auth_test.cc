#include "scheduler/server/plane_auth.h"

#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moeserve {
namespace {

using ::testing::HasSubstr;

TEST(ConstantTimeEqualsTest, EqualOnlyWhenEveryByteAndTheLengthAgree) {
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_TRUE(ConstantTimeEquals("secret-token-1234", "secret-token-1234"));
  EXPECT_FALSE(ConstantTimeEquals("secret-token-1235", "secret-token-1234"));
  EXPECT_FALSE(ConstantTimeEquals("Secret-token-1234", "secret-token-1234"));
  // A prefix, an extension and a repetition of the secret are all different.
  EXPECT_FALSE(ConstantTimeEquals("secret", "secret-token-1234"));
  EXPECT_FALSE(ConstantTimeEquals("secret-token-12345", "secret-token-1234"));
  EXPECT_FALSE(ConstantTimeEquals("abcabc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", ""));
  // Bytes that differ only in the high bit.
  EXPECT_FALSE(ConstantTimeEquals(std::string("a\x80"), std::string("a\x00", 2)));
}

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

TEST(ReadTokenFileTest, DropsTheTrailingNewlineAndKeepsTheRest) {
  auto token = ReadTokenFile("--internal-token-file",
                             WriteFile("ok.token", "c2VjcmV0LXRva2VuLTEyMzQ1Njc4\n"));
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "c2VjcmV0LXRva2VuLTEyMzQ1Njc4");
}

TEST(ReadTokenFileTest, RefusesMissingShortAndMultiLineTokensNamingTheFlagAndFile) {
  auto missing = ReadTokenFile("--internal-token-file", "/nonexistent/token");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(),
              HasSubstr("--internal-token-file /nonexistent/token: cannot read it"));

  const std::string short_path = WriteFile("short.token", "hunter2\n");
  auto short_token = ReadTokenFile("--admin-token-file", short_path);
  EXPECT_EQ(short_token.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(short_token.status().message(), HasSubstr("the token has 7 bytes"));
  EXPECT_THAT(short_token.status().message(), HasSubstr("--admin-token-file " + short_path));

  auto empty = ReadTokenFile("--internal-token-file", WriteFile("empty.token", "\n\n"));
  EXPECT_THAT(empty.status().message(), HasSubstr("the token has 0 bytes"));

  auto two_lines = ReadTokenFile("--internal-token-file",
                                 WriteFile("two.token", "0123456789abcdef\n0123456789abcdef\n"));
  EXPECT_EQ(two_lines.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(two_lines.status().message(), HasSubstr("control character or a line break"));

  auto huge = ReadTokenFile("--internal-token-file",
                            WriteFile("huge.token", std::string(kMaxTokenBytes + 1, 'a')));
  EXPECT_THAT(huge.status().message(), HasSubstr("it must have 16 to 4096"));
}

}  // namespace
}  // namespace moeserve
