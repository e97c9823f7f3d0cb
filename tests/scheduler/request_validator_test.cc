#include "scheduler/admission/request_validator.h"

#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moeserve {
namespace {

using ::testing::HasSubstr;

RequestLimits Limits() {
  RequestLimits l;
  l.vocab_size = 1000;
  l.max_context_tokens = 4096;
  return l;
}

GenerationRequest Good() {
  GenerationRequest r;
  r.prompt_ids = {0, 17, 42};
  r.stopping.max_tokens = 16;
  return r;
}

TEST(RequestValidatorTest, KvCapacityBoundsPromptPlusMaxTokens) {
  RequestLimits limits = Limits();
  limits.max_kv_tokens = 1024;
  GenerationRequest r = Good();
  r.stopping.max_tokens = 1022;
  absl::Status s = ValidateRequest(limits, r);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("prompt (3 tokens) + max_tokens (1022) exceeds the KV cache capacity of "
                        "1024 tokens"));
  r.stopping.max_tokens.reset();
  ASSERT_TRUE(ValidateRequest(limits, r).ok());
  EXPECT_EQ(*r.stopping.max_tokens, 1024 - 3);
}

// Found by tests/fuzz/fuzz_request_validator: prompt + max_tokens overflowed
// int64 (undefined behavior) before it was compared with the context.
TEST(RequestValidatorTest, HugeMaxTokensIsRefusedWithoutOverflow) {
  for (int64_t kv : {int64_t{0}, int64_t{1024}}) {
    RequestLimits limits = Limits();
    limits.max_kv_tokens = kv;
    GenerationRequest r = Good();
    r.stopping.max_tokens = std::numeric_limits<int64_t>::max();
    absl::Status s = ValidateRequest(limits, r);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()),
                HasSubstr("max_tokens (9223372036854775807) exceeds the context length 4096"));
  }
  // Past the context but within int64 once the KV cache is the bound.
  RequestLimits limits = Limits();
  limits.max_context_tokens = std::numeric_limits<int64_t>::max();
  limits.max_kv_tokens = 1024;
  GenerationRequest r = Good();
  r.stopping.max_tokens = std::numeric_limits<int64_t>::max() - 3;
  absl::Status s = ValidateRequest(limits, r);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("exceeds the KV cache capacity of 1024 tokens"));
}

TEST(RequestValidatorTest, LogitBiasIsCheckedEntryByEntry) {
  GenerationRequest r = Good();
  r.sampling.logit_bias = {{0, -100.0f}, {7, 100.0f}};
  EXPECT_TRUE(ValidateRequest(Limits(), r).ok());
  r.sampling.logit_bias = {{7, 100.5f}};
  EXPECT_THAT(std::string(ValidateRequest(Limits(), r).message()),
              HasSubstr("sampling.logit_bias[7] must be in [-100, 100], got 100.5"));
  r.sampling.logit_bias = {{-1, 1.0f}};
  EXPECT_THAT(std::string(ValidateRequest(Limits(), r).message()),
              HasSubstr("sampling.logit_bias: token id -1 is outside the vocabulary"));
  r.sampling.logit_bias.assign(1025, {1, 0.5f});
  EXPECT_THAT(std::string(ValidateRequest(Limits(), r).message()),
              HasSubstr("sampling.logit_bias has 1025 entries; at most 1024"));
}

TEST(RequestValidatorTest, PenaltiesInRangeAreAccepted) {
  GenerationRequest r = Good();
  r.sampling.repetition_penalty = 1.3f;
  r.sampling.presence_penalty = 0.5f;
  r.sampling.frequency_penalty = -2.0f;
  EXPECT_TRUE(ValidateRequest(Limits(), r).ok());
  r.sampling.frequency_penalty = 2.5f;
  EXPECT_THAT(std::string(ValidateRequest(Limits(), r).message()),
              HasSubstr("sampling.frequency_penalty must be in [-2, 2], got 2.5"));
}

TEST(RequestValidatorTest, AcceptsAGoodRequestAndFillsMaxTokens) {
  GenerationRequest r = Good();
  EXPECT_TRUE(ValidateRequest(Limits(), r).ok());
  r.stopping.max_tokens.reset();
  ASSERT_TRUE(ValidateRequest(Limits(), r).ok());
  EXPECT_EQ(*r.stopping.max_tokens, 4096 - 3);
}

struct BadCase {
  std::string name;
  std::function<void(GenerationRequest&)> edit;
  std::string message;
};

class BadRequestTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadRequestTest, IsInvalidArgumentNamingTheField) {
  GenerationRequest r = Good();
  GetParam().edit(r);
  const GenerationRequest before = r;
  absl::Status s = ValidateRequest(Limits(), r);
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(GetParam().message));
  EXPECT_EQ(r.stopping.max_tokens, before.stopping.max_tokens) << "left untouched on error";
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadRequestTest,
    ::testing::Values(
        BadCase{"empty", [](GenerationRequest& r) { r.prompt_ids.clear(); }, "the prompt is empty"},
        BadCase{"id_outside_vocab", [](GenerationRequest& r) { r.prompt_ids[2] = 1000; },
                "prompt token 2 has id 1000, outside the vocabulary [0, 1000)"},
        BadCase{"negative_id", [](GenerationRequest& r) { r.prompt_ids[0] = -1; }, "has id -1"},
        BadCase{"beyond_context", [](GenerationRequest& r) { r.stopping.max_tokens = 4094; },
                "prompt (3 tokens) + max_tokens (4094) exceeds the context length 4096"},
        BadCase{"prompt_fills_context", [](GenerationRequest& r) { r.prompt_ids.assign(4096, 1); },
                "leaving no room to generate"},
        BadCase{"zero_max_tokens", [](GenerationRequest& r) { r.stopping.max_tokens = 0; },
                "stopping.max_tokens must be >= 1"},
        BadCase{"negative_temperature",
                [](GenerationRequest& r) { r.sampling.temperature = -0.5f; },
                "sampling.temperature must be a finite number >= 0, got -0.5"},
        BadCase{"nan_temperature",
                [](GenerationRequest& r) { r.sampling.temperature = std::nanf(""); },
                "sampling.temperature"},
        BadCase{"top_p_zero", [](GenerationRequest& r) { r.sampling.top_p = 0.0f; },
                "sampling.top_p must be in (0, 1], got 0"},
        BadCase{"top_p_above_one", [](GenerationRequest& r) { r.sampling.top_p = 1.5f; },
                "got 1.5"},
        BadCase{"negative_top_k", [](GenerationRequest& r) { r.sampling.top_k = -2; },
                "sampling.top_k must be >= 0, got -2"},
        BadCase{"min_p", [](GenerationRequest& r) { r.sampling.min_p = 2.0f; }, "sampling.min_p"},
        BadCase{"repetition_penalty",
                [](GenerationRequest& r) { r.sampling.repetition_penalty = 0.0f; },
                "sampling.repetition_penalty"},
        BadCase{"too_many_logprobs", [](GenerationRequest& r) { r.logprobs = 21; },
                "logprobs must be in [0, 20], got 21"},
        BadCase{"too_many_stop_strings",
                [](GenerationRequest& r) { r.stopping.stop.assign(17, "x"); },
                "stopping.stop has 17 strings; at most 16"},
        BadCase{"stop_string_too_long",
                [](GenerationRequest& r) {
                  r.stopping.stop = {"ok", std::string(300, 'x')};
                },
                "stopping.stop[1] is 300 bytes long; at most 256"},
        BadCase{"empty_stop_string", [](GenerationRequest& r) { r.stopping.stop = {""}; },
                "stopping.stop[0] is empty"},
        BadCase{"stop_token_outside_vocab",
                [](GenerationRequest& r) { r.stopping.stop_token_ids = {5000}; },
                "stopping.stop_token_ids contains 5000"}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace moeserve
