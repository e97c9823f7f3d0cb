// Text of a token stream as it is generated, for streaming responses.
//
//   IncrementalDetokenizer detok(tokenizer, {.skip_special_tokens = true});
//   for (int32_t id : generated) send(*detok.Push(id));
//   send(detok.Finish());
//
// The deltas joined equal tokenizer.Decode(all ids, options), whatever the
// ids; a delta never ends inside a UTF-8 character (bytes of a character
// split across tokens wait for the token that completes it).
#ifndef MOESERVE_SCHEDULER_TOKENIZER_INCREMENTAL_DETOKENIZER_H_
#define MOESERVE_SCHEDULER_TOKENIZER_INCREMENTAL_DETOKENIZER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "scheduler/tokenizer/tokenizer.h"
#include "scheduler/tokenizer/utf8.h"

namespace moeserve {

// One per stream; not thread safe. `tokenizer` must outlive it.
class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer, const DecodeOptions& options = {})
      : tokenizer_(tokenizer), options_(options) {}

  // The text that `id` completes (often empty while a character is split).
  // InvalidArgument for a negative id; ids that name no token add nothing.
  absl::StatusOr<std::string> Push(int32_t id);

  // The rest at the end of the stream: U+FFFD if it ended inside a character,
  // else nothing. The detokenizer can then start a new stream.
  std::string Finish() { return utf8_.Finish(); }

 private:
  const Tokenizer& tokenizer_;
  const DecodeOptions options_;
  Utf8StreamDecoder utf8_;
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_TOKENIZER_INCREMENTAL_DETOKENIZER_H_
