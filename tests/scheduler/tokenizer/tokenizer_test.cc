// The tokenizer on small tokenizer.json files written here (BPE merge order,
// added-token options, special-token templates, every refusal with the file
// and field it names), and on the published files (ids, lookups, errors,
// concurrency, streaming).
#include "scheduler/tokenizer/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "scheduler/tokenizer/byte_level.h"
#include "scheduler/tokenizer/incremental_detokenizer.h"
#include "scheduler/tokenizer/utf8.h"
#include "tests/scheduler/tokenizer/tokenizer_test_util.h"

namespace moeserve {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Bl(const std::string& bytes) {
  std::string s;
  AppendByteLevel(bytes, &s);
  return s;
}

// A byte-level BPE tokenizer.json: every byte is a token (id = byte value),
// then `merged` tokens from id 256 on, merges as given ("left right", raw
// bytes), and `added` tokens from id 1000 on.
struct Files {
  json tokenizer;
  json config = json::object();
};

Files SmallTokenizer(const std::vector<std::string>& merged,
                     const std::vector<std::pair<std::string, std::string>>& merges,
                     const std::vector<json>& added = {}) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[Bl(std::string(1, static_cast<char>(b)))] = b;
  for (size_t i = 0; i < merged.size(); ++i) vocab[Bl(merged[i])] = 256 + static_cast<int>(i);
  json merge_list = json::array();
  for (const auto& [l, r] : merges) merge_list.push_back(Bl(l) + " " + Bl(r));
  json added_tokens = json::array();
  for (size_t i = 0; i < added.size(); ++i) {
    json t = {{"id", 1000 + static_cast<int>(i)},
              {"single_word", false},
              {"lstrip", false},
              {"rstrip", false},
              {"normalized", false},
              {"special", true}};
    t.update(added[i]);
    added_tokens.push_back(t);
  }
  Files f;
  f.tokenizer = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added_tokens},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"post_processor", {{"type", "ByteLevel"}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"vocab", vocab},
        {"merges", merge_list}}},
  };
  return f;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Build(const Files& f) {
  return Tokenizer::FromJson(f.tokenizer.dump(), f.config.dump(), "small/");
}

std::vector<int32_t> Ids(const Files& f, const std::string& text, bool special = false) {
  auto t = Build(f);
  EXPECT_TRUE(t.ok()) << t.status();
  if (!t.ok()) return {};
  auto ids = (*t)->Encode(text, special);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

TEST(BpeTest, MergesTheLowestRankFirst) {
  // "abc": with b+c ranked first, then a+bc, one token; with a+b first and no
  // ab+c merge, two.
  EXPECT_THAT(
      Ids(SmallTokenizer({"bc", "abc", "ab"}, {{"b", "c"}, {"a", "bc"}, {"a", "b"}}), "abc"),
      ElementsAre(257));
  EXPECT_THAT(
      Ids(SmallTokenizer({"bc", "abc", "ab"}, {{"a", "b"}, {"b", "c"}, {"a", "bc"}}), "abc"),
      ElementsAre(258, 'c'));
}

TEST(BpeTest, EqualRanksMergeLeftmostFirst) {
  EXPECT_THAT(Ids(SmallTokenizer({"aa"}, {{"a", "a"}}), "aaa"), ElementsAre(256, 'a'));
  EXPECT_THAT(Ids(SmallTokenizer({"aa", "aaaa"}, {{"a", "a"}, {"aa", "aa"}}), "aaaaa"),
              ElementsAre(257, 'a'));
}

TEST(BpeTest, ARepeatedMergeKeepsItsLastRank) {
  // a+b is ranked 0 and again 2: b+c (rank 1) goes first.
  EXPECT_THAT(Ids(SmallTokenizer({"ab", "bc"}, {{"a", "b"}, {"b", "c"}, {"a", "b"}}), "abc"),
              ElementsAre('a', 257));
}

TEST(BpeTest, IgnoreMergesTakesWholeWordsFromTheVocabulary) {
  Files f = SmallTokenizer({"xyz"}, {});
  EXPECT_THAT(Ids(f, "xyz"), ElementsAre('x', 'y', 'z'));
  f.tokenizer["model"]["ignore_merges"] = true;
  EXPECT_THAT(Ids(f, "xyz"), ElementsAre(256));
}

TEST(BpeTest, LongWordsAndWordsBeyondTheCacheGiveTheSameIds) {
  const Files f = SmallTokenizer({"ab"}, {{"a", "b"}});
  // 600 bytes: longer than the cache takes; 200 kB: more than the merge
  // scratch keeps between words.
  for (int pairs : {300, 100000}) {
    std::string word;
    std::vector<int32_t> expected;
    for (int i = 0; i < pairs; ++i) {
      word += "ab";
      expected.push_back(256);
    }
    EXPECT_EQ(Ids(f, word), expected);
    EXPECT_EQ(Ids(f, "ab"), std::vector<int32_t>{256}) << "and after it";
  }
}

TEST(AddedTokensTest, LongestMatchWinsAndSpecialTokensAreFoundInText) {
  const Files f = SmallTokenizer({}, {}, {{{"content", "<a>"}}, {{"content", "<a><b>"}}});
  EXPECT_THAT(Ids(f, "x<a><b>y<a>"), ElementsAre('x', 1001, 'y', 1000));
  EXPECT_THAT(Ids(f, "<a"), ElementsAre('<', 'a'));
}

TEST(AddedTokensTest, LstripAndRstripTakeTheWhitespaceAround) {
  const Files plain = SmallTokenizer({}, {}, {{{"content", "<x>"}}});
  EXPECT_THAT(Ids(plain, "a <x> b"), ElementsAre('a', ' ', 1000, ' ', 'b'));
  const Files l = SmallTokenizer({}, {}, {{{"content", "<x>"}, {"lstrip", true}}});
  EXPECT_THAT(Ids(l, "a \t<x> b"), ElementsAre('a', 1000, ' ', 'b'));
  const Files r = SmallTokenizer({}, {}, {{{"content", "<x>"}, {"rstrip", true}}});
  EXPECT_THAT(Ids(r, "a <x>\n b"), ElementsAre('a', ' ', 1000, 'b'));
}

TEST(AddedTokensTest, SingleWordTokensMatchOnlyBetweenNonWordCharacters) {
  const Files f = SmallTokenizer({}, {}, {{{"content", "hi"}, {"single_word", true}}});
  EXPECT_THAT(Ids(f, "hi, hi"), ElementsAre(1000, ',', ' ', 1000));
  EXPECT_THAT(Ids(f, "this"), ElementsAre('t', 'h', 'i', 's'));
  EXPECT_THAT(Ids(f, "hié"), ElementsAre('h', 'i', 0xC3, 0xA9));  // é is a letter
}

TEST(AddedTokensTest, NormalizedTokensAreFoundAfterNormalization) {
  const std::string nfc = "\u00e9";   // é
  const std::string nfd = "e\u0301";  // e + combining acute
  Files f = SmallTokenizer({}, {}, {{{"content", nfc}, {"normalized", true}}});
  f.tokenizer["normalizer"] = {{"type", "NFC"}};
  EXPECT_THAT(Ids(f, "x" + nfd), ElementsAre('x', 1000));
  f.tokenizer["added_tokens"][0]["normalized"] = false;
  EXPECT_THAT(Ids(f, "x" + nfd), ElementsAre('x', 0xC3, 0xA9));  // NFC text, no token
}

TEST(AddedTokensTest, SplitSpecialTokensLeavesSpecialTokensAsText) {
  Files f =
      SmallTokenizer({}, {}, {{{"content", "<s>"}}, {{"content", "<t>"}, {"special", false}}});
  EXPECT_THAT(Ids(f, "<s><t>"), ElementsAre(1000, 1001));
  f.config["split_special_tokens"] = true;
  EXPECT_THAT(Ids(f, "<s><t>"), ElementsAre('<', 's', '>', 1001));
}

TEST(SpecialTokensTest, TemplateProcessingAddsItsTokens) {
  Files f = SmallTokenizer({}, {}, {{{"content", "<s>"}}, {{"content", "</s>"}}});
  f.tokenizer["post_processor"] = json::parse(R"({
      "type": "Sequence", "processors": [
        {"type": "ByteLevel"},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": "</s>", "type_id": 0}}],
         "special_tokens": {"<s>": {"id": "<s>", "ids": [1000], "tokens": ["<s>"]},
                            "</s>": {"id": "</s>", "ids": [1001], "tokens": ["</s>"]}}}]})");
  EXPECT_THAT(Ids(f, "a", true), ElementsAre(1000, 'a', 1001));
  EXPECT_THAT(Ids(f, "a", false), ElementsAre('a'));
}

TEST(SpecialTokensTest, LlamaClassesAddBosAndEosAsTheConfigSays) {
  Files f = SmallTokenizer({}, {}, {{{"content", "<s>"}}, {{"content", "</s>"}}});
  f.config = {{"tokenizer_class", "LlamaTokenizerFast"},
              {"bos_token", "<s>"},
              {"eos_token", {{"__type", "AddedToken"}, {"content", "</s>"}}}};
  EXPECT_THAT(Ids(f, "a", true), ElementsAre(1000, 'a'));  // add_bos_token defaults to true
  f.config["add_eos_token"] = true;
  f.config["add_bos_token"] = false;
  EXPECT_THAT(Ids(f, "a", true), ElementsAre('a', 1001));
  f.config["tokenizer_class"] = "Qwen2TokenizerFast";  // keeps the post-processor: nothing
  EXPECT_THAT(Ids(f, "a", true), ElementsAre('a'));
  auto t = Build(f);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)->bos_id(), 1000);
  EXPECT_EQ((*t)->eos_id(), 1001);
  EXPECT_FALSE((*t)->pad_id().has_value());
}

TEST(DecodeTest, SkipsSpecialTokensAndIdsThatNameNoToken) {
  Files f = SmallTokenizer({"ab"}, {{"a", "b"}},
                           {{{"content", "<s>"}}, {{"content", "<t>"}, {"special", false}}});
  f.config = {{"additional_special_tokens", {"<t>"}}};
  auto t = Build(f);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->vocab_size(), 1002);
  EXPECT_FALSE((*t)->HasToken(500));  // a hole between 256 and 1000
  EXPECT_THAT((*t)->special_ids(), ElementsAre(1000, 1001));
  EXPECT_EQ(*(*t)->Decode({1000, 256, 500, 5000, 1001, ' '}), "<s>ab<t> ");
  EXPECT_EQ(*(*t)->Decode({1000, 256, 1001}, {.skip_special_tokens = true}), "ab");
  EXPECT_EQ((*t)->Decode({1, -1}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT((*t)->Decode({1, -1}).status().message(), HasSubstr("token id -1 at position 1"));
  EXPECT_EQ(*(*t)->Decode({0xE6, 0x97}), "\xEF\xBF\xBD");  // half a character
  IncrementalDetokenizer d(**t);
  EXPECT_EQ(d.Push(-3).status().code(), absl::StatusCode::kInvalidArgument);
}

// Every refusal names the file and the field.
TEST(LoadTest, UnsupportedOrMalformedFilesAreErrorsNamingFileAndField) {
  struct Case {
    std::function<void(Files&)> change;
    std::string message;
  };
  const Case cases[] = {
      {[](Files& f) {
         f.tokenizer["normalizer"] = {{"type", "Lowercase"}};
       },
       "small/tokenizer.json: normalizer: normalizer type \"Lowercase\" is not supported"},
      {[](Files& f) {
         f.tokenizer["normalizer"] = json::parse(
             R"({"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Replace"}]})");
       },
       "normalizer.normalizers[1]: normalizer type \"Replace\""},
      {[](Files& f) {
         f.tokenizer["pre_tokenizer"] = {{"type", "Metaspace"}};
       },
       "pre_tokenizer: pre-tokenizer type \"Metaspace\" is not supported"},
      {[](Files& f) {
         f.tokenizer["pre_tokenizer"] = json::parse(R"({"type": "Sequence", "pretokenizers": [
             {"type": "ByteLevel"}, {"type": "Digits"}]})");
       },
       "pre_tokenizer.pretokenizers[1]: a Digits step after ByteLevel"},
      {[](Files& f) {
         f.tokenizer["pre_tokenizer"] =
             json::parse(R"({"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Isolated"})");
       },
       "pre_tokenizer: has no ByteLevel step"},
      {[](Files& f) {
         f.tokenizer["pre_tokenizer"] = json::parse(R"({"type": "Sequence", "pretokenizers": [
             {"type": "Split", "pattern": {"Regex": "(?<=a)b"}, "behavior": "Isolated"},
             {"type": "ByteLevel"}]})");
       },
       "pre_tokenizer.pretokenizers[0]: regex lookaround"},
      {[](Files& f) {
         f.tokenizer["pre_tokenizer"] = json::parse(R"({"type": "Sequence", "pretokenizers": [
             {"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Sideways"},
             {"type": "ByteLevel"}]})");
       },
       "pre_tokenizer.pretokenizers[0].behavior: \"Sideways\" is not a split behavior"},
      {[](Files& f) { f.tokenizer["model"]["type"] = "Unigram"; },
       "model.type: model type \"Unigram\" is not supported (only BPE)"},
      {[](Files& f) { f.tokenizer["model"]["dropout"] = 0.1; }, "model.dropout"},
      {[](Files& f) { f.tokenizer["model"]["byte_fallback"] = true; }, "model.byte_fallback"},
      {[](Files& f) { f.tokenizer["model"]["continuing_subword_prefix"] = "##"; },
       "model.continuing_subword_prefix"},
      {[](Files& f) { f.tokenizer["model"]["merges"] = {"a zz"}; },
       "model.merges[0]: token \"zz\" is not in the vocabulary"},
      {[](Files& f) { f.tokenizer["model"]["merges"] = {"x y"}; },
       "model.merges[0]: merged token \"xy\" is not in the vocabulary"},
      {[](Files& f) { f.tokenizer["model"]["vocab"]["a"] = "x"; },
       "model.vocab[\"a\"]: id \"x\" is not"},
      {[](Files& f) { f.tokenizer["model"].erase("vocab"); }, "model.vocab: expected an object"},
      {[](Files& f) {
         f.tokenizer["decoder"] = {{"type", "WordPiece"}};
       },
       "decoder: decoder type \"WordPiece\" is not supported"},
      {[](Files& f) {
         f.tokenizer["post_processor"] = {{"type", "BertProcessing"}};
       },
       "post_processor: post-processor type \"BertProcessing\" is not supported"},
      {[](Files& f) {
         f.tokenizer["truncation"] = {{"max_length", 8}};
       },
       "truncation: only null is supported"},
      {[](Files& f) {
         f.tokenizer["added_tokens"] = {{{"content", "<x>"}}};
       },
       "added_tokens[0]: expected an object with an integer \"id\""},
      {[](Files& f) {
         f.tokenizer["added_tokens"] = {{{"id", 2000000000}, {"content", "<x>"}}};
       },
       "small/tokenizer.json: the largest token id is 2000000000"},
      {[](Files& f) { f.config["bos_token"] = "<nope>"; },
       "small/tokenizer_config.json: bos_token: \"<nope>\" is not a token of tokenizer.json"},
      {[](Files& f) { f.config["clean_up_tokenization_spaces"] = true; },
       "small/tokenizer_config.json: clean_up_tokenization_spaces: true is not supported"},
      {[](Files& f) { f.config["add_bos_token"] = "yes"; },
       "add_bos_token: expected true or false"},
      {[](Files& f) { f.config["tokenizer_class"] = "LlamaTokenizerFast"; },
       "small/tokenizer_config.json: bos_token: is not set, but add_bos_token is true"},
  };
  for (const Case& c : cases) {
    Files f = SmallTokenizer({}, {});
    c.change(f);
    auto t = Build(f);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(t.status().message(), HasSubstr(c.message));
  }
  auto malformed = Tokenizer::FromJson("{\"model\": ", "{}", "small/");
  EXPECT_THAT(malformed.status().message(), HasSubstr("small/tokenizer.json: malformed JSON"));
}

TEST(LoadTest, MissingFilesAreNotFoundNamingTheFile) {
  const std::string dir = ::testing::TempDir() + "/tokenizer_load_test";
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto none = Tokenizer::Load(dir);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(none.status().message(), HasSubstr(dir + "/tokenizer.json"));
  std::ofstream(dir + "/tokenizer.json") << SmallTokenizer({}, {}).tokenizer.dump();
  auto no_config = Tokenizer::Load(dir);
  EXPECT_THAT(no_config.status().message(), HasSubstr(dir + "/tokenizer_config.json"));
  std::ofstream(dir + "/tokenizer_config.json") << "{}";
  EXPECT_TRUE(Tokenizer::Load(dir).ok());
}

TEST(PublishedTokenizerTest, DeepseekV3Facts) {
  const Tokenizer* t = testing::SharedTokenizer("deepseek_v3");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->vocab_size(), 128815);  // config.json pads the embedding to 129280
  EXPECT_EQ(t->bos_id(), 0);
  EXPECT_EQ(t->eos_id(), 1);
  EXPECT_EQ(t->pad_id(), 1);
  EXPECT_EQ(t->IdToToken(0), "<｜begin▁of▁sentence｜>");
  EXPECT_EQ(t->TokenToId("<｜User｜>"), 128803);
  EXPECT_FALSE(t->IsSpecial(128803));  // an added token, but not special
  EXPECT_TRUE(t->IsSpecial(1));
  EXPECT_THAT(t->prefix_ids(), ElementsAre(0));
  EXPECT_TRUE(t->suffix_ids().empty());
  EXPECT_EQ(*t->Encode("Hello", true), (std::vector<int32_t>{0, 19923}));
  EXPECT_FALSE(t->IdToToken(128815).has_value());
}

TEST(PublishedTokenizerTest, Qwen3Facts) {
  const Tokenizer* t = testing::SharedTokenizer("qwen3");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->vocab_size(), 151669);  // config.json has 151936 rows
  EXPECT_FALSE(t->bos_id().has_value());
  EXPECT_EQ(t->eos_id(), 151645);  // <|im_end|>
  EXPECT_EQ(t->pad_id(), 151643);  // <|endoftext|>
  EXPECT_EQ(t->TokenToId("<think>"), 151667);
  EXPECT_FALSE(t->IsSpecial(151667));
  EXPECT_TRUE(t->IsSpecial(151644));  // <|im_start|>
  EXPECT_EQ(t->IdToToken(1879), "Ġworld");
  EXPECT_TRUE(t->prefix_ids().empty());
  EXPECT_EQ(*t->Decode({151644, 872, 151667}, {.skip_special_tokens = true}), "user<think>");
}

TEST(PublishedTokenizerTest, InvalidUtf8IsInvalidArgumentNamingTheOffset) {
  for (const char* name : {"deepseek_v3", "qwen3"}) {
    const Tokenizer* t = testing::SharedTokenizer(name);
    ASSERT_NE(t, nullptr);
    for (const auto& [text, offset] :
         std::vector<std::pair<std::string, std::string>>{{"abc\xff", "byte offset 3"},
                                                          {"<|im_start|>\xC3", "byte offset 12"},
                                                          {"\xED\xA0\x80", "byte offset 0"}}) {
      auto ids = t->Encode(text, true);
      EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument) << name;
      EXPECT_THAT(ids.status().message(), HasSubstr(offset)) << name;
    }
  }
}

std::vector<std::string> CorpusLines() {
  std::vector<std::string> lines;
  std::ifstream in(std::string(MOESERVE_SOURCE_DIR) +
                   "/tests/scheduler/tokenizer/corpus/mixed.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) lines.push_back(json::parse(line).get<std::string>());
  }
  return lines;
}

// Encode from several threads at once (sharing the word cache) gives what it
// gives on one.
TEST(PublishedTokenizerTest, ConcurrentEncodesGiveTheSameIds) {
  const Tokenizer* t = testing::SharedTokenizer("qwen3");
  ASSERT_NE(t, nullptr);
  const std::vector<std::string> lines = CorpusLines();
  ASSERT_GT(lines.size(), 100u);
  std::vector<std::vector<int32_t>> expected;
  for (const std::string& l : lines) expected.push_back(*t->Encode(l, false));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (int round = 0; round < 5; ++round) {
        for (size_t i = 0; i < lines.size(); ++i) {
          const size_t j =
              (i * 7 + static_cast<size_t>(k) * 13 + static_cast<size_t>(round)) % lines.size();
          auto ids = t->Encode(lines[j], false);
          if (!ids.ok() || *ids != expected[j]) ++mismatches[k];
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_THAT(mismatches, ElementsAre(0, 0, 0, 0));
}

// Any bytes: valid UTF-8 encodes (and, without a normalizer, decodes back),
// anything else is InvalidArgument; nothing crashes. Code points are drawn
// from all of Unicode, unassigned and private use included.
TEST(PublishedTokenizerTest, ArbitraryInputEncodesOrFailsCleanly) {
  for (const char* name : {"deepseek_v3", "qwen3"}) {
    const Tokenizer* t = testing::SharedTokenizer(name);
    ASSERT_NE(t, nullptr);
    const bool normalizes = std::string(name) == "qwen3";
    std::mt19937 rng(11);
    int invalid = 0;
    for (int trial = 0; trial < 3000; ++trial) {
      std::string text;
      const int n = static_cast<int>(rng() % 24);
      for (int i = 0; i < n; ++i) {
        if (trial % 2 == 0) {  // raw bytes, biased to UTF-8 lead/continuation bytes and '<'
          const uint32_t r = rng() % 4;
          text.push_back(static_cast<char>(r == 0 ? '<' : r == 1 ? 0x80 + rng() % 0x80 : rng()));
        } else {  // any scalar value
          char32_t cp = rng() % 0x110000;
          if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
          AppendUtf8(cp, &text);
        }
      }
      const absl::StatusOr<std::vector<int32_t>> ids = t->Encode(text, true);
      if (!ValidateUtf8(text).ok()) {
        EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
        ++invalid;
        continue;
      }
      ASSERT_TRUE(ids.ok()) << ids.status();
      if (!normalizes) {
        EXPECT_EQ(*t->Decode(*ids, {.skip_special_tokens = true}), text) << trial;
      }
    }
    EXPECT_GT(invalid, 500) << "the raw-byte half should be mostly ill-formed";
  }
}

// Random ids, single bytes of split characters and special tokens included:
// the streamed deltas are whole characters and join to Decode.
TEST(PublishedTokenizerTest, StreamedDeltasOfRandomIdsJoinToDecode) {
  for (const char* name : {"deepseek_v3", "qwen3"}) {
    const Tokenizer* t = testing::SharedTokenizer(name);
    ASSERT_NE(t, nullptr);
    std::mt19937 rng(7);
    // Single-byte tokens of UTF-8 lead and continuation bytes, so that
    // characters are split across ids and some sequences are ill-formed.
    std::vector<int32_t> bytes;
    for (int b : {0xE6, 0x97, 0xA5, 0xF0, 0x9F, 0x98, 0x80, 0xC3, 0xA9, 0xFF, 0x41}) {
      bytes.push_back(*t->TokenToId(Bl(std::string(1, static_cast<char>(b)))));
    }
    for (bool skip : {false, true}) {
      for (int trial = 0; trial < 300; ++trial) {
        std::vector<int32_t> ids;
        const int n = 1 + static_cast<int>(rng() % 40);
        for (int i = 0; i < n; ++i) {
          const uint32_t kind = rng() % 4;
          if (kind == 0) {
            ids.push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(t->vocab_size())));
          } else if (kind == 1) {
            ids.push_back(t->special_ids()[rng() % t->special_ids().size()]);
          } else {
            ids.push_back(bytes[rng() % bytes.size()]);
          }
        }
        IncrementalDetokenizer d(*t, {.skip_special_tokens = skip});
        std::string joined;
        for (int32_t id : ids) {
          auto delta = d.Push(id);
          ASSERT_TRUE(delta.ok());
          ASSERT_TRUE(ValidateUtf8(*delta).ok());
          joined += *delta;
        }
        joined += d.Finish();
        EXPECT_EQ(joined, *t->Decode(ids, {.skip_special_tokens = skip})) << name << " " << trial;
      }
    }
  }
}

}  // namespace
}  // namespace moeserve
