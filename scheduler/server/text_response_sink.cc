#include "scheduler/server/text_response_sink.h"

#include <cstdint>
#include <string>
#include <utility>

namespace moeserve {
namespace {

int32_t ToId(uint32_t id) {
  return id > static_cast<uint32_t>(INT32_MAX) ? -1 : static_cast<int32_t>(id);
}

// One token's text, special tokens kept; bytes that are not whole characters
// on their own become U+FFFD (a proto string must be UTF-8).
std::string TokenText(const Tokenizer& tokenizer, uint32_t id) {
  const int32_t token = ToId(id);
  if (token < 0) return "";
  absl::StatusOr<std::string> text = tokenizer.Decode({&token, 1});
  return text.ok() ? *std::move(text) : std::string();
}

}  // namespace

TextResponseSink::TextResponseSink(std::shared_ptr<ResponseSink> inner,
                                   std::shared_ptr<const Tokenizer> tokenizer,
                                   TextStream::Options options)
    : inner_(std::move(inner)), tokenizer_(std::move(tokenizer)), text_(*tokenizer_, options) {}

void TextResponseSink::Send(v1::GenerateResponse response) {
  if (response.has_chunk()) {
    if (text_.stopped()) return;  // tokens past the stop string: the client never sees them
    v1::Chunk& chunk = *response.mutable_chunk();
    std::string text;
    int kept = chunk.token_ids_size();
    for (int i = 0; i < chunk.token_ids_size(); ++i) {
      last_token_ = ToId(chunk.token_ids(i));
      TextStream::Update update = text_.Push(*last_token_);
      text += update.text;
      if (update.stopped) {
        kept = i + 1;
        break;
      }
    }
    if (kept < chunk.token_ids_size()) {
      chunk.mutable_token_ids()->Truncate(kept);
      if (chunk.logprobs_size() > kept) {
        chunk.mutable_logprobs()->DeleteSubrange(kept, chunk.logprobs_size() - kept);
      }
    }
    chunk.set_text_delta(std::move(text));
    AddTokenTexts(chunk);
  } else if (response.has_final()) {
    v1::Final& final = *response.mutable_final();
    if (text_.stopped()) {
      final.set_stop_reason(text_.stop_string());
    } else {
      std::string rest = text_.Finish();
      if (!rest.empty()) {
        v1::GenerateResponse tail;
        tail.set_request_id(response.request_id());
        tail.mutable_chunk()->set_text_delta(std::move(rest));
        inner_->Send(std::move(tail));
      }
      if (final.finish_reason() == v1::FINISH_REASON_STOP && last_token_.has_value() &&
          *last_token_ >= 0) {
        final.set_stop_reason(TokenText(*tokenizer_, static_cast<uint32_t>(*last_token_)));
      }
    }
  }
  inner_->Send(std::move(response));
}

void TextResponseSink::AddTokenTexts(v1::Chunk& chunk) const {
  for (auto* entries : {chunk.mutable_logprobs(), chunk.mutable_prompt_logprobs()}) {
    for (v1::GeneratedTokenLogprobs& lp : *entries) {
      if (lp.has_chosen()) {
        lp.mutable_chosen()->set_text(TokenText(*tokenizer_, lp.chosen().id()));
      }
      for (v1::TokenLogprob& alt : *lp.mutable_top()) {
        alt.set_text(TokenText(*tokenizer_, alt.id()));
      }
    }
  }
}

}  // namespace moeserve
