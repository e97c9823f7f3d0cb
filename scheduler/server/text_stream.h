// The text of one generated stream as a client sees it: generated token ids
// turned into text deltas (incremental detokenization, whole UTF-8 characters
// only), stop strings looked for in that text, and the text that could be the
// start of a stop string held back until it is decided.
//
//   TextStream text(tokenizer, {.stop = {"\n\n"}});
//   for (int32_t id : generated) {
//     TextStream::Update u = text.Push(id);
//     send(u.text);
//     if (u.stopped) break;  // end the request: text.stop_string() matched
//   }
//   if (!text.stopped()) send(text.Finish());
//
// Guarantees:
//   - Without a stop, the deltas and Finish() joined equal
//     tokenizer.Decode(all ids, {skip_special_tokens}).
//   - With a stop, they equal that text up to (not including) the first
//     occurrence of the matched stop string; nothing after it is ever
//     returned. A stop string split over several tokens, or inside one token,
//     is found all the same.
//   - A delta never ends inside a UTF-8 character, and never ends with a
//     proper prefix of a stop string that a later token could complete.
//
// Pure: no I/O, no threads. Not thread safe; one per stream.
#ifndef MOESERVE_SCHEDULER_SERVER_TEXT_STREAM_H_
#define MOESERVE_SCHEDULER_SERVER_TEXT_STREAM_H_

#include <cstdint>
#include <string>
#include <vector>

#include "scheduler/tokenizer/incremental_detokenizer.h"
#include "scheduler/tokenizer/tokenizer.h"

namespace moeserve {

class TextStream {
 public:
  struct Options {
    // Non-empty UTF-8 strings (admission checks both). Empty: no matching and
    // no hold-back.
    std::vector<std::string> stop;
    // Stop strings end nothing until this many tokens were pushed, as
    // min_tokens holds back the end-of-sequence token.
    int64_t min_tokens = 0;
    // Leave special tokens (BOS, EOS, <|im_end|>, ...) out of the text.
    bool skip_special_tokens = true;
  };

  // `tokenizer` must outlive the stream.
  TextStream(const Tokenizer& tokenizer, Options options);

  TextStream(const TextStream&) = delete;
  TextStream& operator=(const TextStream&) = delete;

  struct Update {
    std::string text;      // text now decided: send it
    bool stopped = false;  // this token completed a stop string: end the stream
  };

  // Adds the next generated token. Once stopped, returns nothing more. Ids
  // that name no token (negative, or padding rows past the tokenizer's
  // vocabulary) add no text.
  Update Push(int32_t id);

  // At the end of a stream that did not stop: the text still held back, and
  // U+FFFD if the stream ended inside a UTF-8 character. Nothing once stopped.
  std::string Finish();

  bool stopped() const { return stopped_; }
  // The stop string that matched; empty until stopped.
  const std::string& stop_string() const { return stop_string_; }
  // Tokens pushed so far.
  int64_t num_tokens() const { return num_tokens_; }

 private:
  // Length of the longest suffix of pending_ that is a proper prefix of some
  // stop string: the bytes a later token could still turn into a match.
  size_t HeldBackBytes() const;

  IncrementalDetokenizer detokenizer_;
  const Options options_;
  std::string pending_;  // decoded but not yet returned: at most a stop string's length - 1
  int64_t num_tokens_ = 0;
  bool stopped_ = false;
  std::string stop_string_;
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SERVER_TEXT_STREAM_H_
