// A ResponseSink that adds text to a request's stream before handing it on:
// each chunk's text_delta (a TextStream per request), the text of reported
// log-probability tokens, the text held back for stop strings at the end, and
// the final message's stop_reason. It tells the engine loop when a stop
// string completed (stop_requested), and drops anything the engine would send
// for tokens after it.
#ifndef MOESERVE_SCHEDULER_SERVER_TEXT_RESPONSE_SINK_H_
#define MOESERVE_SCHEDULER_SERVER_TEXT_RESPONSE_SINK_H_

#include <memory>
#include <optional>

#include "scheduler/server/engine_loop.h"
#include "scheduler/server/text_stream.h"
#include "scheduler/tokenizer/tokenizer.h"

namespace moeserve {

// Called on one thread at a time (the engine thread, or the handler before
// the request reaches the engine), as ResponseSink is.
class TextResponseSink final : public ResponseSink {
 public:
  // `tokenizer` is shared so that it outlives every stream still open.
  TextResponseSink(std::shared_ptr<ResponseSink> inner, std::shared_ptr<const Tokenizer> tokenizer,
                   TextStream::Options options);

  // Chunks: token ids through the TextStream, text_delta set, the token ids
  // after a completed stop string cut off. After the stop, further chunks
  // are dropped. Final: the held-back text first (a chunk with text only),
  // then the final with stop_reason set.
  void Send(v1::GenerateResponse response) override;
  void Close(absl::Status status) override { inner_->Close(std::move(status)); }
  bool stop_requested() const override { return text_.stopped(); }

 private:
  void AddTokenTexts(v1::Chunk& chunk) const;  // TokenLogprob.text of every entry

  std::shared_ptr<ResponseSink> inner_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  TextStream text_;
  std::optional<int32_t> last_token_;  // the stop token's text goes into stop_reason
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SERVER_TEXT_RESPONSE_SINK_H_
