// TextStream on the published DeepSeek-V3 tokenizer: deltas against Decode,
// characters split over tokens, stop strings inside and across tokens, at the
// start, held back and released, several at once, min_tokens; and a
// randomized check against a direct reference of "cut at the first stop".
#include "scheduler/server/text_stream.h"

#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/tokenizer/byte_level.h"
#include "scheduler/tokenizer/utf8.h"
#include "tests/scheduler/tokenizer/tokenizer_test_util.h"

namespace moeserve {
namespace {

using ::testing::ElementsAre;

const Tokenizer& DeepSeek() {
  const Tokenizer* t = testing::SharedTokenizer("deepseek_v3");
  if (t == nullptr) std::abort();  // SharedTokenizer failed the test with the reason
  return *t;
}

// The id of the token that is the single byte `b`.
int32_t ByteToken(uint8_t b) {
  std::string spelled;
  AppendByteLevel(std::string(1, static_cast<char>(b)), &spelled);
  std::optional<int32_t> id = DeepSeek().TokenToId(spelled);
  EXPECT_TRUE(id.has_value()) << "no token for byte " << static_cast<int>(b);
  return id.value_or(0);
}

// One token per byte of `bytes`: every stop string of two or more bytes then
// spans tokens.
std::vector<int32_t> ByteTokens(const std::string& bytes) {
  std::vector<int32_t> ids;
  for (char c : bytes) ids.push_back(ByteToken(static_cast<uint8_t>(c)));
  return ids;
}

std::vector<int32_t> Encode(const std::string& text) {
  auto ids = DeepSeek().Encode(text, /*add_special_tokens=*/false);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

struct Streamed {
  std::vector<std::string> deltas;  // one per pushed token, then Finish's
  std::string text;                 // all of them joined
  bool stopped = false;
  size_t stopped_at = 0;  // index of the token that completed the stop string
  std::string stop_string;
};

// Pushes `ids` until the stream stops, then Finish.
Streamed Stream(const std::vector<int32_t>& ids, TextStream::Options options) {
  TextStream stream(DeepSeek(), std::move(options));
  Streamed run;
  for (size_t i = 0; i < ids.size(); ++i) {
    TextStream::Update u = stream.Push(ids[i]);
    EXPECT_TRUE(ValidateUtf8(u.text).ok()) << "delta " << i << " is not whole UTF-8";
    run.deltas.push_back(u.text);
    run.text += u.text;
    if (u.stopped) {
      run.stopped = true;
      run.stopped_at = i;
      break;
    }
  }
  EXPECT_EQ(run.stopped, stream.stopped());
  run.stop_string = stream.stop_string();
  run.deltas.push_back(stream.Finish());
  run.text += run.deltas.back();
  return run;
}

TEST(TextStreamTest, DeltasJoinToTheDecodeOfAllIdsWithoutSpecialTokens) {
  const std::string text =
      "Hello, world! Ciao, città. 你好，世界。こんにちは 👩‍👩‍👧 x = "
      "12345678;\n\tdone";
  std::vector<int32_t> ids = Encode(text);
  ASSERT_GT(ids.size(), 10u);
  const int32_t bos = DeepSeek().bos_id().value();
  const int32_t eos = DeepSeek().eos_id().value();
  ids.insert(ids.begin(), bos);
  ids.push_back(eos);
  Streamed run = Stream(ids, {});
  EXPECT_FALSE(run.stopped);
  EXPECT_EQ(run.text, text);
  EXPECT_EQ(run.text, *DeepSeek().Decode(ids, {.skip_special_tokens = true}));
  EXPECT_EQ(run.deltas.front(), "") << "BOS is special: no text";

  TextStream::Options keep;
  keep.skip_special_tokens = false;
  EXPECT_EQ(Stream(ids, keep).text, *DeepSeek().Decode(ids));
}

TEST(TextStreamTest, AMultiByteCharacterSplitOverTokensComesOutWholeOnce) {
  // 世 is E4 B8 96, é is C3 A9: one token per byte.
  const std::vector<int32_t> ids = ByteTokens("a\xE4\xB8\x96\xC3\xA9");
  Streamed run = Stream(ids, {});
  EXPECT_THAT(run.deltas, ElementsAre("a", "", "", "世", "", "é", ""));
  EXPECT_EQ(run.text, "a世é");
}

TEST(TextStreamTest, AStreamEndingInsideACharacterEndsWithAReplacementCharacter) {
  Streamed run = Stream(ByteTokens("ok\xE4\xB8"), {});
  EXPECT_THAT(run.deltas, ElementsAre("o", "k", "", "", "\xEF\xBF\xBD"));
}

TEST(TextStreamTest, AStopStringAcrossTokenBoundariesStopsAndIsNotSent) {
  const std::vector<int32_t> ids = Encode("Hello world, and more text after it");
  ASSERT_EQ(*DeepSeek().Decode({ids.data(), 2}), "Hello world") << "needs \"Hello\" \" world\"";
  // "lo wor" starts inside "Hello" and ends inside " world".
  Streamed run = Stream(ids, {.stop = {"lo wor"}});
  EXPECT_TRUE(run.stopped);
  EXPECT_EQ(run.stopped_at, 1u) << "the token that completes the stop string ends the stream";
  EXPECT_EQ(run.stop_string, "lo wor");
  EXPECT_EQ(run.text, "Hel");
  EXPECT_EQ(run.deltas[0], "Hel") << "\"lo\" could start the stop string: held back";
  EXPECT_EQ(run.deltas[1], "");
  EXPECT_EQ(run.deltas.back(), "") << "nothing after a stop";
}

TEST(TextStreamTest, AStopStringSplitIntoSingleBytesStillStops) {
  Streamed run = Stream(ByteTokens("abc<END>def"), {.stop = {"<END>"}});
  EXPECT_TRUE(run.stopped);
  EXPECT_EQ(run.stopped_at, 7u);
  EXPECT_EQ(run.text, "abc");
  EXPECT_THAT(run.deltas, ElementsAre("a", "b", "c", "", "", "", "", "", ""));
}

TEST(TextStreamTest, AStopStringInsideOneTokenCutsThatTokensText) {
  const std::vector<int32_t> ids = Encode("Hello world");
  Streamed run = Stream(ids, {.stop = {"orl"}});
  EXPECT_TRUE(run.stopped);
  EXPECT_EQ(run.stopped_at, 1u);
  EXPECT_EQ(run.text, "Hello w") << "the stop string and the rest of its token are not sent";
}

TEST(TextStreamTest, AStopStringAtTheVeryStartSendsNothing) {
  Streamed run = Stream(Encode("Hello world"), {.stop = {"Hello"}});
  EXPECT_TRUE(run.stopped);
  EXPECT_EQ(run.stopped_at, 0u);
  EXPECT_EQ(run.text, "");

  Streamed split = Stream(ByteTokens("STOP now"), {.stop = {"STOP"}});
  EXPECT_TRUE(split.stopped);
  EXPECT_EQ(split.stopped_at, 3u);
  EXPECT_EQ(split.text, "");
}

TEST(TextStreamTest, HeldBackTextIsReleasedWhenNoStopStringCompletes) {
  // " world" could start "world peace" until the stream ends.
  Streamed at_end = Stream(Encode("Hello world"), {.stop = {"world peace"}});
  EXPECT_FALSE(at_end.stopped);
  EXPECT_THAT(at_end.deltas, ElementsAre("Hello", " ", "world"));
  EXPECT_EQ(at_end.text, "Hello world");

  // ...or until a token rules it out.
  Streamed ruled_out = Stream(Encode("Hello world war"), {.stop = {"world peace"}});
  EXPECT_FALSE(ruled_out.stopped);
  EXPECT_EQ(ruled_out.deltas[1], " ");
  EXPECT_EQ(ruled_out.deltas[2], "world war");
  EXPECT_EQ(ruled_out.text, "Hello world war");
}

TEST(TextStreamTest, OfSeveralStopStringsTheEarliestMatchWins) {
  // Both complete in the one token "xabc": "ab" starts first.
  const int32_t xabc = DeepSeek().TokenToId("xabc").value_or(-1);
  std::vector<int32_t> one_token = xabc >= 0 ? std::vector<int32_t>{xabc} : ByteTokens("xabc");
  for (const std::vector<std::string>& stop :
       {std::vector<std::string>{"bc", "ab"}, std::vector<std::string>{"ab", "bc"}}) {
    Streamed run = Stream(one_token, {.stop = stop});
    EXPECT_TRUE(run.stopped);
    EXPECT_EQ(run.text, "x") << stop[0] << "," << stop[1];
    EXPECT_EQ(run.stop_string, "ab") << stop[0] << "," << stop[1];
  }
  // Streamed byte by byte, "b" completes before "abc" does.
  Streamed run = Stream(ByteTokens("xabc"), {.stop = {"abc", "b"}});
  EXPECT_TRUE(run.stopped);
  EXPECT_EQ(run.stopped_at, 2u);
  EXPECT_EQ(run.stop_string, "b");
  EXPECT_EQ(run.text, "xa");
}

TEST(TextStreamTest, StopStringsTakeEffectOnlyAfterMinTokens) {
  Streamed run = Stream(ByteTokens("aaaa"), {.stop = {"a"}, .min_tokens = 3});
  EXPECT_TRUE(run.stopped);
  EXPECT_EQ(run.stopped_at, 2u);
  EXPECT_EQ(run.text, "aa");
}

TEST(TextStreamTest, MultiByteStopStringsAreHeldBackWholeCharactersOnly) {
  // "世界" arrives byte by byte; "世" alone is held (it could start the stop).
  Streamed run = Stream(ByteTokens("a\xE4\xB8\x96\xE7\x95\x8C!"), {.stop = {"世界!"}});
  EXPECT_TRUE(run.stopped);
  EXPECT_EQ(run.text, "a");
  Streamed released = Stream(ByteTokens("a\xE4\xB8\x96?"), {.stop = {"世界"}});
  EXPECT_FALSE(released.stopped);
  EXPECT_THAT(released.deltas, ElementsAre("a", "", "", "", "世?", ""));
}

TEST(TextStreamTest, NothingAfterAStop) {
  TextStream stream(DeepSeek(), {.stop = {"b"}});
  EXPECT_EQ(stream.Push(ByteToken('a')).text, "a");
  TextStream::Update stop = stream.Push(ByteToken('b'));
  EXPECT_TRUE(stop.stopped);
  TextStream::Update after = stream.Push(ByteToken('c'));
  EXPECT_EQ(after.text, "");
  EXPECT_FALSE(after.stopped) << "the stop is reported once";
  EXPECT_EQ(stream.Finish(), "");
}

TEST(TextStreamTest, IdsPastTheTokenizerOrNegativeAddNoText) {
  TextStream stream(DeepSeek(), {});
  EXPECT_EQ(stream.Push(-1).text, "");
  EXPECT_EQ(stream.Push(DeepSeek().vocab_size() + 100).text, "");
  EXPECT_EQ(stream.Push(ByteToken('z')).text, "z");
  EXPECT_EQ(stream.num_tokens(), 3);
}

// Random texts over a small alphabet (so that stop strings occur often),
// encoded with the real tokenizer, against a direct reference: the stream
// stops at the first token by whose end some stop string has occurred, and
// cuts the text where the earliest of those occurrences starts.
TEST(TextStreamTest, RandomTextsAndStopStringsMatchTheReference) {
  std::mt19937 rng(7);
  const std::string alphabet = "ab c.";
  auto random_string = [&](int min_len, int max_len) {
    std::string s(std::uniform_int_distribution<int>(min_len, max_len)(rng), ' ');
    for (char& c : s) c = alphabet[std::uniform_int_distribution<size_t>(0, 4)(rng)];
    return s;
  };
  int stopped = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const std::string text = random_string(1, 40);
    std::vector<std::string> stops;
    for (int n = std::uniform_int_distribution<int>(1, 3)(rng); n > 0; --n) {
      stops.push_back(random_string(1, 5));
    }
    const std::vector<int32_t> ids = Encode(text);
    std::string expected = text;
    std::string expected_stop;
    size_t end = 0;  // of the text of the tokens so far
    for (int32_t id : ids) {
      end += DeepSeek().TokenBytes(id).size();
      size_t first = std::string::npos;
      for (const std::string& s : stops) {
        const size_t at = text.find(s);
        if (at != std::string::npos && at + s.size() <= end && at < first) {
          first = at;
          expected_stop = s;
        }
      }
      if (first != std::string::npos) {
        expected = text.substr(0, first);
        break;
      }
    }
    Streamed run = Stream(ids, {.stop = stops});
    const std::string what = "text \"" + text + "\", trial " + std::to_string(trial);
    EXPECT_EQ(run.text, expected) << what;
    EXPECT_EQ(run.stopped, !expected_stop.empty()) << what;
    if (run.stopped) {
      ++stopped;
      EXPECT_EQ(run.stop_string, expected_stop) << what;
    }
  }
  EXPECT_GT(stopped, 100) << "the random cases should stop often";
  EXPECT_LT(stopped, 390) << "...and not always";
}

}  // namespace
}  // namespace moeserve
