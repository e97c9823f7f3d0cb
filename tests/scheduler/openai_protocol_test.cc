// OpenAI request bodies to protos, errors in OpenAI's shape, and response
// bodies and server-sent events built from moeserve.v1 streams.
#include "scheduler/server/openai_protocol.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/server/openai_api.h"
#include "scheduler/server/openai_response.h"

namespace moeserve {
namespace {

using ::testing::HasSubstr;
using ojson = nlohmann::ordered_json;

OpenAiRequest Chat(const std::string& body) {
  auto r = ParseOpenAiRequest(OpenAiEndpoint::kChatCompletions, body);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : OpenAiRequest{};
}

absl::Status ChatError(const std::string& body) {
  return ParseOpenAiRequest(OpenAiEndpoint::kChatCompletions, body).status();
}

TEST(OpenAiProtocol, ChatFieldsBecomeTheChatRequest) {
  const OpenAiRequest r = Chat(R"({
    "model": "m", "messages": [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": [{"type": "text", "text": "a"},
                                                            {"type": "text", "text": "b"}]},
                               {"role": "assistant", "content": null}],
    "max_tokens": 5, "max_completion_tokens": 7, "temperature": 0.5, "top_p": 0.9,
    "top_k": -1, "min_p": 0.1, "seed": -1, "stop": "\n", "presence_penalty": 1,
    "frequency_penalty": -1, "repetition_penalty": 1.1, "logit_bias": {"42": -100},
    "logprobs": true, "top_logprobs": 3, "n": 2, "user": "u", "stream": true,
    "stream_options": {"include_usage": true}, "unknown_field": {"x": 1},
    "chat_template_kwargs": {"enable_thinking": false}})");
  EXPECT_EQ(r.model, "m");
  ASSERT_EQ(r.chat.messages_size(), 3);
  EXPECT_EQ(r.chat.messages(1).content(), "a\nb");
  EXPECT_EQ(r.chat.messages(2).content(), "");
  EXPECT_EQ(r.chat.stopping().max_tokens(), 7u);  // max_completion_tokens wins
  EXPECT_FLOAT_EQ(r.chat.sampling().temperature(), 0.5f);
  EXPECT_EQ(r.chat.sampling().top_k(), 0);  // -1 is off
  EXPECT_EQ(r.chat.sampling().seed(), UINT64_MAX);
  EXPECT_EQ(r.chat.stopping().stop(0), "\n");
  EXPECT_FLOAT_EQ(r.chat.sampling().logit_bias().at(42), -100.0f);
  EXPECT_FLOAT_EQ(r.chat.sampling().repetition_penalty(), 1.1f);
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.top_logprobs, 3);
  EXPECT_EQ(r.n, 2);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_FALSE(r.chat.template_kwargs().fields().at("enable_thinking").bool_value());
}

TEST(OpenAiProtocol, WrongTypesAreBadRequestsNamingTheField) {
  const struct {
    const char* body;
    const char* param;
    const char* message;
  } cases[] = {
      {R"({"messages": [], "temperature": "hot"})", "temperature",
       "temperature must be a number, got a string"},
      {R"({"messages": [], "max_tokens": 1.5})", "max_tokens", "max_tokens must be an integer"},
      {R"({"messages": [], "max_tokens": -3})", "max_tokens", "max_tokens must be in [0, "},
      {R"({"messages": [], "n": 0})", "n", "n must be in [1, 128], got 0"},
      {R"({"messages": [], "stop": 3})", "stop", "stop must be a string or an array"},
      {R"({"messages": [], "stop": ["a", 1]})", "stop[1]", "stop[1] must be a string"},
      {R"({"messages": [], "logit_bias": {"x": 1}})", "logit_bias", "is not a token id"},
      {R"({"messages": [], "stream": "yes"})", "stream", "stream must be a boolean"},
      {R"({"messages": [], "top_logprobs": 2})", "top_logprobs", "needs logprobs set to true"},
      {R"({"messages": [], "top_logprobs": 21, "logprobs": true})", "top_logprobs",
       "top_logprobs must be in [0, 20]"},
      {R"({"messages": "hi"})", "messages", "messages must be an array"},
      {R"({"messages": [{"content": "hi"}]})", "messages[0].role", "must be a string"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
       "messages[0].content[0]", "not supported: this model takes text only"},
      {R"({"messages": [], "response_format": {"type": "json_object"}})", "response_format",
       "not supported"},
      {R"({"messages": [], "model": 3})", "model", "model must be a string, got a number"},
      {R"({"temperature": 1})", "messages", "messages is missing"},
  };
  for (const auto& c : cases) {
    const absl::Status s = ChatError(c.body);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.body;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.message)) << c.body;
    EXPECT_EQ(OpenAiErrorParam(s), c.param) << c.body;
    EXPECT_EQ(HttpStatusOf(s), 400);
  }
}

TEST(OpenAiProtocol, BodiesThatAreNotJsonObjects) {
  EXPECT_THAT(std::string(ChatError("{").message()), HasSubstr("not valid JSON"));
  EXPECT_THAT(std::string(ChatError("[1]").message()), HasSubstr("must be a JSON object"));
}

TEST(OpenAiProtocol, CompletionPrompts) {
  auto one = ParseOpenAiRequest(OpenAiEndpoint::kCompletions,
                                R"({"prompt": "Hello", "logprobs": 2, "echo": false})");
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_EQ(one->prompts.size(), 1u);
  EXPECT_EQ(one->prompts[0].text(), "Hello");
  EXPECT_TRUE(one->logprobs);
  EXPECT_EQ(one->top_logprobs, 2);

  auto ids = ParseOpenAiRequest(OpenAiEndpoint::kCompletions,
                                R"({"prompt": [1, 2, 3], "max_tokens": 4, "n": 3})");
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_EQ(ids->prompts.size(), 1u);
  EXPECT_EQ(ids->prompts[0].token_ids().ids_size(), 3);
  EXPECT_EQ(ids->prompts[0].stopping().max_tokens(), 4u);
  EXPECT_EQ(ids->n, 3);

  auto batch = ParseOpenAiRequest(OpenAiEndpoint::kCompletions,
                                  R"({"prompt": [[1, 2], "text"], "temperature": 0})");
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->prompts.size(), 2u);
  EXPECT_EQ(batch->prompts[1].text(), "text");
  EXPECT_TRUE(batch->prompts[1].sampling().has_temperature());

  const absl::Status negative =
      ParseOpenAiRequest(OpenAiEndpoint::kCompletions, R"({"prompt": [1, -2]})").status();
  EXPECT_EQ(OpenAiErrorParam(negative), "prompt[1]");
  const absl::Status echo =
      ParseOpenAiRequest(OpenAiEndpoint::kCompletions, R"({"prompt": "a", "echo": true})").status();
  EXPECT_EQ(OpenAiErrorParam(echo), "echo");
  const absl::Status many =
      ParseOpenAiRequest(OpenAiEndpoint::kCompletions, R"({"prompt": ["a", "b"], "n": 100})")
          .status();
  EXPECT_THAT(std::string(many.message()), HasSubstr("exceeds 128 choices"));
}

TEST(OpenAiProtocol, ErrorsHaveOpenAisShape) {
  const ojson bad = OpenAiError(absl::InvalidArgumentError("sampling.top_p must be in (0, 1]"));
  EXPECT_EQ(bad["error"]["type"], "invalid_request_error");
  EXPECT_EQ(bad["error"]["param"], "top_p");  // the gRPC field, in OpenAI's words
  EXPECT_EQ(bad["error"]["message"], "sampling.top_p must be in (0, 1]");
  EXPECT_TRUE(bad["error"]["code"].is_null());
  const ojson full = OpenAiError(absl::ResourceExhaustedError("the waiting queue is full"));
  EXPECT_EQ(full["error"]["code"], "queue_full");
  EXPECT_EQ(HttpStatusOf(absl::ResourceExhaustedError("")), 429);
  EXPECT_EQ(HttpStatusOf(absl::UnavailableError("")), 503);
  EXPECT_EQ(HttpStatusOf(absl::UnauthenticatedError("")), 401);
  EXPECT_EQ(OpenAiError(absl::UnauthenticatedError("x"))["error"]["code"], "invalid_api_key");
  EXPECT_EQ(HttpStatusOf(absl::NotFoundError("")), 404);
  EXPECT_TRUE(OpenAiError(absl::InternalError("x"))["error"]["param"].is_null());
}

v1::GenerateResponse ChunkOf(const std::string& text, std::vector<uint32_t> ids = {}) {
  v1::GenerateResponse r;
  r.mutable_chunk()->set_text_delta(text);
  for (uint32_t id : ids) {
    r.mutable_chunk()->add_token_ids(id);
    v1::GeneratedTokenLogprobs* lp = r.mutable_chunk()->add_logprobs();
    lp->mutable_chosen()->set_id(id);
    lp->mutable_chosen()->set_text(text);
    lp->mutable_chosen()->set_logprob(-0.5f);
    for (int k = 0; k < 2; ++k) {
      v1::TokenLogprob* t = lp->add_top();
      t->set_id(id + static_cast<uint32_t>(k));
      t->set_text(k == 0 ? text : "alt");
      t->set_logprob(k == 0 ? -0.5f : -1.5f);
    }
  }
  return r;
}

v1::GenerateResponse FinalOf(v1::FinishReason reason, uint32_t prompt, uint32_t completion,
                             uint32_t cached = 0) {
  v1::GenerateResponse r;
  r.mutable_final()->set_finish_reason(reason);
  r.mutable_final()->mutable_usage()->set_prompt_tokens(prompt);
  r.mutable_final()->mutable_usage()->set_completion_tokens(completion);
  r.mutable_final()->mutable_usage()->set_cached_tokens(cached);
  return r;
}

TEST(OpenAiResponse, ChatBodyJoinsEachChoicesTextAndCountsThePromptOnce) {
  OpenAiResponseBuilder::Options o;
  o.id = "chatcmpl-1";
  o.model = "m";
  o.choices = 2;
  o.n = 2;
  o.logprobs = true;
  o.top_logprobs = 1;
  OpenAiResponseBuilder b(o);
  EXPECT_EQ(b.Add(0, ChunkOf("Hel", {7})), "");
  b.Add(1, ChunkOf("Bye", {8}));
  b.Add(0, ChunkOf("lo", {9}));
  b.Add(0, FinalOf(v1::FINISH_REASON_STOP_STRING, 5, 2));
  b.Add(1, FinalOf(v1::FINISH_REASON_LENGTH, 5, 1, 4));
  const ojson body = b.Body();
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["choices"][0]["message"]["content"], "Hello");
  EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["choices"][1]["finish_reason"], "length");
  const ojson& content = body["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 2u);
  EXPECT_EQ(content[0]["token"], "Hel");
  EXPECT_EQ(content[0]["bytes"], ojson::array({72, 101, 108}));
  EXPECT_EQ(content[0]["top_logprobs"].size(), 1u);  // trimmed to top_logprobs
  EXPECT_EQ(body["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(body["usage"]["completion_tokens"], 3);
  EXPECT_EQ(body["usage"]["total_tokens"], 8);
  EXPECT_EQ(body["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
}

TEST(OpenAiResponse, StreamedChatIsChunksThenUsageThenDone) {
  OpenAiResponseBuilder::Options o;
  o.id = "chatcmpl-2";
  o.model = "m";
  o.stream = true;
  o.include_usage = true;
  OpenAiResponseBuilder b(o);
  const std::string start = b.StreamStart();
  EXPECT_THAT(start, HasSubstr(R"("delta":{"role":"assistant","content":""})"));
  EXPECT_THAT(start, HasSubstr(R"("object":"chat.completion.chunk")"));
  const std::string hi = b.Add(0, ChunkOf("Hi"));
  EXPECT_EQ(hi.substr(0, 6), "data: ");
  EXPECT_EQ(hi.substr(hi.size() - 2), "\n\n");
  const ojson event = ojson::parse(hi.substr(6));
  EXPECT_EQ(event["choices"][0]["delta"]["content"], "Hi");
  EXPECT_TRUE(event["usage"].is_null());
  EXPECT_EQ(b.Add(0, ChunkOf("")), "");  // nothing to say
  const ojson fin = ojson::parse(b.Add(0, FinalOf(v1::FINISH_REASON_STOP, 3, 1)).substr(6));
  EXPECT_EQ(fin["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(fin["choices"][0]["delta"].empty());
  const std::string end = b.StreamEnd();
  EXPECT_THAT(end, HasSubstr(R"("choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1)"));
  EXPECT_EQ(end.substr(end.size() - 14), "data: [DONE]\n\n");
}

TEST(OpenAiResponse, CompletionLogprobsAreTheLegacyLists) {
  OpenAiResponseBuilder::Options o;
  o.endpoint = OpenAiEndpoint::kCompletions;
  o.logprobs = true;
  o.top_logprobs = 2;
  OpenAiResponseBuilder b(o);
  b.Add(0, ChunkOf("ab", {1}));
  b.Add(0, ChunkOf("c", {2}));
  b.Add(0, FinalOf(v1::FINISH_REASON_LENGTH, 2, 2));
  const ojson body = b.Body();
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["choices"][0]["text"], "abc");
  const ojson& lp = body["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"], ojson::array({"ab", "c"}));
  EXPECT_EQ(lp["text_offset"], ojson::array({0, 2}));
  EXPECT_EQ(lp["top_logprobs"][0].size(), 2u);
  EXPECT_FLOAT_EQ(lp["top_logprobs"][0]["alt"].get<float>(), -1.5f);
}

TEST(OpenAiResponse, ReasoningAndToolCallsComeApartFromContent) {
  OpenAiResponseBuilder::Options o;
  o.id = "chatcmpl-3";
  o.parse = {ToolCallFormat::kQwen3, /*reasoning=*/true, /*starts_in_reasoning=*/false};
  OpenAiResponseBuilder whole(o);
  o.stream = true;
  OpenAiResponseBuilder streamed(o);
  const char* deltas[] = {
      "<think>\nThe user wants", " the weather.\n</think>\n\nLet me check.\n<tool",
      "_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": ", "\"Oslo\"}}\n</tool_call>"};
  std::string events;
  for (const char* d : deltas) {
    whole.Add(0, ChunkOf(d));
    events += streamed.Add(0, ChunkOf(d));
  }
  whole.Add(0, FinalOf(v1::FINISH_REASON_STOP, 9, 30));
  events += streamed.Add(0, FinalOf(v1::FINISH_REASON_STOP, 9, 30));
  const ojson message = whole.Body()["choices"][0]["message"];
  EXPECT_EQ(message["content"], "Let me check.");
  EXPECT_EQ(message["reasoning_content"], "The user wants the weather.");
  ASSERT_EQ(message["tool_calls"].size(), 1u);
  EXPECT_EQ(message["tool_calls"][0]["type"], "function");
  EXPECT_EQ(message["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(message["tool_calls"][0]["function"]["arguments"], R"({"city":"Oslo"})");
  EXPECT_THAT(message["tool_calls"][0]["id"].get<std::string>(), ::testing::StartsWith("call_"));
  EXPECT_EQ(whole.Body()["choices"][0]["finish_reason"], "tool_calls");
  // Streamed: the same pieces as deltas, none of the markup in content.
  std::string content, reasoning;
  ojson calls = ojson::array();
  std::string finish;
  for (size_t at = 0; (at = events.find("data: ", at)) != std::string::npos;) {
    const size_t end = events.find("\n\n", at);
    const ojson e = ojson::parse(events.substr(at + 6, end - at - 6));
    const ojson& delta = e["choices"][0]["delta"];
    content += delta.value("content", "");
    reasoning += delta.value("reasoning_content", "");
    if (delta.contains("tool_calls")) calls.push_back(delta["tool_calls"][0]);
    if (!e["choices"][0]["finish_reason"].is_null()) finish = e["choices"][0]["finish_reason"];
    at = end;
  }
  EXPECT_EQ(content, "Let me check.");
  EXPECT_EQ(reasoning, "The user wants the weather.");
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0]["index"], 0);
  EXPECT_EQ(calls[0]["function"]["arguments"], R"({"city":"Oslo"})");
  EXPECT_EQ(finish, "tool_calls");
}

TEST(OpenAiProtocol, ToolsAndToolMessagesReachTheTemplate) {
  const OpenAiRequest r = Chat(R"({"messages": [
      {"role": "user", "content": "Weather?"},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
      {"role": "tool", "content": "5C", "tool_call_id": "c1"}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]})");
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_TRUE(r.messages[1]["content"].is_null());  // DeepSeek-V3's template needs the null
  EXPECT_EQ(r.messages[1]["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(r.messages[2]["tool_call_id"], "c1");
  ASSERT_TRUE(r.tools.has_value());
  EXPECT_TRUE(r.parse_tool_calls);  // tool_choice defaults to auto
  const OpenAiRequest none = Chat(R"({"messages": [{"role": "user", "content": "x"}],
    "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"})");
  EXPECT_FALSE(none.parse_tool_calls);
  const absl::Status required = ChatError(R"({"messages": [], "tool_choice": "required",
    "tools": [{"type": "function", "function": {"name": "f"}}]})");
  EXPECT_EQ(OpenAiErrorParam(required), "tool_choice");
  EXPECT_EQ(OpenAiErrorParam(ChatError(R"({"messages": [], "tools": [{"type": "function"}]})")),
            "tools");
}

TEST(OpenAiResponse, ErrorsInsideAStreamEndIt) {
  const std::string e =
      OpenAiResponseBuilder::StreamError(OpenAiError(absl::UnavailableError("x")));
  EXPECT_THAT(e, HasSubstr(R"(data: {"error":{"message":"x","type":"server_error")"));
  EXPECT_EQ(e.substr(e.size() - 14), "data: [DONE]\n\n");
}

TEST(OpenAiApiKeys, BearerKeysMatchWholeAndOnlyWhole) {
  const std::vector<std::string> keys = {"sk-one", "sk-second-key"};
  EXPECT_TRUE(AuthorizedBearer("Bearer sk-one", keys));
  EXPECT_TRUE(AuthorizedBearer("bearer sk-second-key", keys));  // the scheme is case-insensitive
  EXPECT_FALSE(AuthorizedBearer("Bearer sk-on", keys));         // a prefix
  EXPECT_FALSE(AuthorizedBearer("Bearer sk-one1", keys));       // longer
  EXPECT_FALSE(AuthorizedBearer("Bearer sk-onf", keys));
  EXPECT_FALSE(AuthorizedBearer("sk-one", keys));  // no scheme
  EXPECT_FALSE(AuthorizedBearer("Basic sk-one", keys));
  EXPECT_FALSE(AuthorizedBearer("Bearer ", keys));
  EXPECT_FALSE(AuthorizedBearer("", keys));
  EXPECT_FALSE(AuthorizedBearer("Bearer x", {}));
  EXPECT_FALSE(ReadApiKeyFile("/nonexistent/keys").ok());
}

}  // namespace
}  // namespace moeserve
