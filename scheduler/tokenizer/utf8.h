// UTF-8 helpers of the tokenizer: validation that names the offending byte,
// and the lossy decoding that Hugging Face tokenizers apply to decoded bytes
// (Rust's String::from_utf8_lossy, the WHATWG decoder: each maximal subpart of
// an ill-formed sequence becomes one U+FFFD), whole or streamed.
#ifndef MOESERVE_SCHEDULER_TOKENIZER_UTF8_H_
#define MOESERVE_SCHEDULER_TOKENIZER_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace moeserve {

// OK when `text` is well-formed UTF-8 (no overlongs, surrogates or code points
// above U+10FFFF); otherwise InvalidArgument naming the byte offset and value
// of the first ill-formed sequence.
absl::Status ValidateUtf8(std::string_view text);

// The code point at the start of well-formed UTF-8 `text` (non-empty), and its
// length in bytes in `*length`.
char32_t DecodeUtf8(std::string_view text, size_t* length);

// Appends the UTF-8 encoding of `cp` (a Unicode scalar value) to `*out`.
void AppendUtf8(char32_t cp, std::string* out);

// Appends `bytes` to `*out`, replacing each maximal ill-formed subpart with
// U+FFFD.
void AppendUtf8Lossy(std::string_view bytes, std::string* out);

// The lossy decoder, fed bytes in pieces: what it returns over all Push calls
// and Finish is exactly AppendUtf8Lossy of all the bytes at once. It never
// returns part of a character: bytes that may still become one are held
// until the next Push or Finish. Not thread safe.
class Utf8StreamDecoder {
 public:
  // Returns the text that the bytes pushed so far settle.
  std::string Push(std::string_view bytes);
  // Returns what the held bytes decode to when no more follow (one U+FFFD for
  // an incomplete character, or nothing) and starts over.
  std::string Finish();

 private:
  std::string held_;  // a proper prefix of a well-formed sequence, at most 3 bytes
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_TOKENIZER_UTF8_H_
