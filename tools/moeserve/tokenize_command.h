// `moeserve tokenize` and `moeserve detokenize`: a model's tokenizer on
// stdin and stdout, for scripts and for checking what the service sees.
#ifndef MOESERVE_TOOLS_MOESERVE_TOKENIZE_COMMAND_H_
#define MOESERVE_TOOLS_MOESERVE_TOKENIZE_COMMAND_H_

#include <istream>
#include <ostream>
#include <string>

#include "absl/status/status.h"

namespace moeserve {

// Reads UTF-8 text from `in` (all of it, byte for byte: a trailing newline is
// part of the text) and writes its token ids to `out` as one JSON array and a
// newline. `tokenizer_dir` holds tokenizer.json and tokenizer_config.json.
// InvalidArgument for text that is not UTF-8 (naming the byte offset).
absl::Status Tokenize(const std::string& tokenizer_dir, bool add_special_tokens, std::istream& in,
                      std::ostream& out);

// Reads a JSON array of token ids from `in` and writes their text to `out`,
// exactly (no newline added), so that tokenize | detokenize gives back the
// input. InvalidArgument, naming the position, for anything but an array of
// integers in [0, vocabulary size).
absl::Status Detokenize(const std::string& tokenizer_dir, bool skip_special_tokens,
                        std::istream& in, std::ostream& out);

}  // namespace moeserve

#endif  // MOESERVE_TOOLS_MOESERVE_TOKENIZE_COMMAND_H_
