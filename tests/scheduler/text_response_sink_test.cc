// TextResponseSink between the engine loop and a stream, on the published
// DeepSeek-V3 tokenizer: what it adds to chunks and finals, what it holds
// back and releases, and what it cuts after a stop string.
#include "scheduler/server/text_response_sink.h"

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/scheduler/tokenizer/tokenizer_test_util.h"

namespace moeserve {
namespace {

// Records what reaches the client's stream.
class RecordingSink final : public ResponseSink {
 public:
  void Send(v1::GenerateResponse response) override { sent.push_back(std::move(response)); }
  void Close(absl::Status status) override { closed = status; }
  std::vector<v1::GenerateResponse> sent;
  std::optional<absl::Status> closed;
};

std::shared_ptr<const Tokenizer> DeepSeek() {
  static const auto* shared = [] {
    auto t = Tokenizer::Load(testing::TokenizerDir("deepseek_v3"));
    EXPECT_TRUE(t.ok()) << t.status() << " (tools/setup.sh installs the tokenizer files)";
    return new std::shared_ptr<const Tokenizer>(t.ok() ? std::move(*t) : nullptr);
  }();
  if (*shared == nullptr) std::abort();
  return *shared;
}

v1::GenerateResponse Chunk(const std::vector<int32_t>& ids) {
  v1::GenerateResponse r;
  r.set_request_id("r1");
  for (int32_t id : ids) r.mutable_chunk()->add_token_ids(static_cast<uint32_t>(id));
  return r;
}

v1::GenerateResponse Final(v1::FinishReason reason, uint32_t completion_tokens) {
  v1::GenerateResponse r;
  r.set_request_id("r1");
  r.mutable_final()->set_finish_reason(reason);
  r.mutable_final()->mutable_usage()->set_completion_tokens(completion_tokens);
  return r;
}

std::vector<int32_t> Encode(const std::string& text) {
  return *DeepSeek()->Encode(text, /*add_special_tokens=*/false);
}

TEST(TextResponseSinkTest, ChunksCarryTheirTextAndHeldBackTextComesBeforeTheFinal) {
  auto inner = std::make_shared<RecordingSink>();
  TextResponseSink sink(inner, DeepSeek(), {.stop = {"world peace"}});
  const std::vector<int32_t> ids = Encode("Hello world");
  ASSERT_EQ(ids.size(), 2u);
  sink.Send(Chunk({ids[0]}));
  sink.Send(Chunk({ids[1]}));
  EXPECT_FALSE(sink.stop_requested());
  sink.Send(Final(v1::FINISH_REASON_LENGTH, 2));
  sink.Close(absl::OkStatus());

  ASSERT_EQ(inner->sent.size(), 4u);
  EXPECT_EQ(inner->sent[0].chunk().text_delta(), "Hello");
  EXPECT_EQ(inner->sent[1].chunk().text_delta(), " ") << "\"world\" could start \"world peace\"";
  EXPECT_EQ(inner->sent[1].chunk().token_ids_size(), 1);
  EXPECT_EQ(inner->sent[2].chunk().text_delta(), "world") << "released at the end";
  EXPECT_EQ(inner->sent[2].chunk().token_ids_size(), 0) << "a text-only chunk";
  EXPECT_EQ(inner->sent[2].request_id(), "r1");
  ASSERT_TRUE(inner->sent[3].has_final());
  EXPECT_EQ(inner->sent[3].final().stop_reason(), "");
  EXPECT_EQ(inner->sent[3].final().usage().completion_tokens(), 2u);
  EXPECT_TRUE(inner->closed.has_value() && inner->closed->ok());
}

TEST(TextResponseSinkTest, AStopStringCutsTheChunkAndNamesItselfInTheFinal) {
  auto inner = std::make_shared<RecordingSink>();
  TextResponseSink sink(inner, DeepSeek(), {.stop = {"lo wor"}});
  const std::vector<int32_t> ids = Encode("Hello world again");
  ASSERT_EQ(ids.size(), 3u);
  // Several tokens in one chunk: those after the stopping one are cut, with
  // their log-probabilities.
  v1::GenerateResponse chunk = Chunk(ids);
  for (int32_t id : ids) {
    chunk.mutable_chunk()->add_logprobs()->mutable_chosen()->set_id(static_cast<uint32_t>(id));
  }
  sink.Send(chunk);
  EXPECT_TRUE(sink.stop_requested());
  sink.Send(Chunk({ids[2]}));  // anything after the stop never reaches the client
  sink.Send(Final(v1::FINISH_REASON_STOP_STRING, 2));

  ASSERT_EQ(inner->sent.size(), 2u);
  const v1::Chunk& c = inner->sent[0].chunk();
  EXPECT_EQ(c.text_delta(), "Hel");
  EXPECT_THAT(c.token_ids(), ::testing::ElementsAre(ids[0], ids[1]));
  ASSERT_EQ(c.logprobs_size(), 2);
  EXPECT_EQ(c.logprobs(1).chosen().text(), " world");
  EXPECT_EQ(inner->sent[1].final().finish_reason(), v1::FINISH_REASON_STOP_STRING);
  EXPECT_EQ(inner->sent[1].final().stop_reason(), "lo wor");
}

TEST(TextResponseSinkTest, AStopTokenIsNamedByItsTextWhileItsTextIsSkipped) {
  auto inner = std::make_shared<RecordingSink>();
  TextResponseSink sink(inner, DeepSeek(), {});
  const int32_t eos = DeepSeek()->eos_id().value();
  sink.Send(Chunk({Encode("Hi")[0]}));
  sink.Send(Chunk({eos}));
  sink.Send(Final(v1::FINISH_REASON_STOP, 2));
  ASSERT_EQ(inner->sent.size(), 3u);
  EXPECT_EQ(inner->sent[1].chunk().text_delta(), "") << "special tokens are left out of the text";
  EXPECT_EQ(inner->sent[2].final().stop_reason(), "<｜end▁of▁sentence｜>");
}

TEST(TextResponseSinkTest, ErrorsPassThrough) {
  auto inner = std::make_shared<RecordingSink>();
  TextResponseSink sink(inner, DeepSeek(), {});
  sink.Close(absl::UnavailableError("the worker group was lost"));
  ASSERT_TRUE(inner->closed.has_value());
  EXPECT_EQ(inner->closed->code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(inner->sent.empty());
}

}  // namespace
}  // namespace moeserve
