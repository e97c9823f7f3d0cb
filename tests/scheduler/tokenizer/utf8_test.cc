// UTF-8 validation with byte offsets, and lossy decoding (whole and
// streamed) with one U+FFFD per maximal ill-formed subpart.
#include "scheduler/tokenizer/utf8.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moeserve {
namespace {

using ::testing::HasSubstr;

const std::string kFffd = "\xEF\xBF\xBD";

TEST(Utf8Test, ValidTextPasses) {
  for (const std::string text : {"", "ascii only", "Perché", "日本語", "👩🏽‍💻", "\x7f",
                                 "\xF4\x8F\xBF\xBF" /* U+10FFFF */, "\xED\x9F\xBF" /* U+D7FF */}) {
    EXPECT_TRUE(ValidateUtf8(text).ok()) << text;
  }
}

TEST(Utf8Test, IllFormedTextNamesTheByteOffset) {
  struct Case {
    std::string text;
    std::string message;
  };
  const Case cases[] = {
      {"ab\xff", "ill-formed sequence at byte offset 2 (0xff)"},
      {"\x80", "ill-formed sequence at byte offset 0 (0x80)"},       // lone continuation
      {"x\xC0\x80", "ill-formed sequence at byte offset 1 (0xc0)"},  // overlong NUL
      {"x\xE0\x80\x80", "at byte offset 1 (0xe0)"},                  // overlong
      {"12\xED\xA0\x80", "at byte offset 2 (0xed)"},                 // surrogate U+D800
      {"\xF4\x90\x80\x80", "at byte offset 0 (0xf4)"},               // above U+10FFFF
      {"\xF5\x80\x80\x80", "at byte offset 0 (0xf5)"},
      {"Perch\xC3", "truncated sequence at byte offset 5 (0xc3)"},
      {"日本\xE8\xAA", "truncated sequence at byte offset 6 (0xe8)"},
      {"a\xE6\x97x", "ill-formed sequence at byte offset 1 (0xe6)"},
  };
  for (const Case& c : cases) {
    absl::Status s = ValidateUtf8(c.text);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(s.message(), HasSubstr(c.message));
  }
}

std::string Fffd(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += kFffd;
  return s;
}

// The examples of the Unicode Standard (section 3.9, "U+FFFD Substitution of
// Maximal Subparts"), which WHATWG and Rust's from_utf8_lossy follow.
TEST(Utf8Test, LossyDecodingReplacesEachMaximalSubpart) {
  struct Case {
    std::string bytes;
    std::string text;
  };
  const Case cases[] = {
      {"\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64",
       "a" + Fffd(3) + "b" + Fffd(1) + "c" + Fffd(2) + "d"},
      {"\xC0\xAF\xE0\x80\xBF\xF0\x81\x82\x41", Fffd(8) + "A"},  // no valid prefix
      {"\xED\xA0\x80\xED\xBF\xBF\xED\xAF\x41", Fffd(8) + "A"},  // surrogates
      {"\xF4\x91\x92\x93\xFF\x41\x80\xBF\x42", Fffd(5) + "A" + Fffd(2) + "B"},
      {"\xE1\x80\xE2\xF0\x91\x92\xF1\xBF\x41", Fffd(4) + "A"},  // truncated prefixes
      {"ok \xC3\xA9", "ok é"},
      {"", ""},
  };
  for (const Case& c : cases) {
    std::string out;
    AppendUtf8Lossy(c.bytes, &out);
    EXPECT_EQ(out, c.text);
    EXPECT_TRUE(ValidateUtf8(out).ok());
  }
}

// However the bytes are cut into pushes, the stream gives what the whole
// decoding gives, and never a piece of a character.
TEST(Utf8Test, StreamedDecodingEqualsWholeDecodingForEveryCut) {
  const std::vector<std::string> inputs = {
      "Perché 日本語 👩🏽‍💻",
      "\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64",
      "\xE6\x97\xA5\xE6\x97",          // ends inside a character
      "\xF0\x9F\x98\x80\xF0\x9F\x98",  // ditto, 4-byte
      "\xE1\x80\xE2\xF0\x91\x92\xF1\xBF\x41",
      "\xED\xA0\x80\xC3\xA9\xC3",
  };
  for (const std::string& input : inputs) {
    std::string whole;
    AppendUtf8Lossy(input, &whole);
    // Every split into two pushes, and byte by byte.
    for (size_t cut = 0; cut <= input.size(); ++cut) {
      Utf8StreamDecoder d;
      const std::string a = d.Push(input.substr(0, cut));
      const std::string b = d.Push(input.substr(cut));
      const std::string c = d.Finish();
      for (const std::string* piece : {&a, &b, &c}) {
        EXPECT_TRUE(ValidateUtf8(*piece).ok()) << "cut " << cut;
      }
      EXPECT_EQ(a + b + c, whole) << "cut " << cut;
    }
    Utf8StreamDecoder d;
    std::string joined;
    for (char byte : input) joined += d.Push(std::string(1, byte));
    joined += d.Finish();
    EXPECT_EQ(joined, whole);
  }
}

TEST(Utf8Test, StreamHoldsAnIncompleteCharacterUntilItCompletes) {
  Utf8StreamDecoder d;
  EXPECT_EQ(d.Push("a\xE6"), "a");
  EXPECT_EQ(d.Push("\x97"), "");
  EXPECT_EQ(d.Push("\xA5z"), "日z");
  EXPECT_EQ(d.Push("\xF0\x9F"), "");
  EXPECT_EQ(d.Finish(), kFffd);  // the stream ended inside a character
  EXPECT_EQ(d.Push("b"), "b");   // and starts over
}

}  // namespace
}  // namespace moeserve
