// The byte-level alphabet of GPT-2 style BPE (the ByteLevel pre-tokenizer and
// decoder of Hugging Face tokenizers): every byte maps to one printable code
// point, so that tokens of any bytes are plain strings. Bytes that are
// printable Latin-1 (!..~, ¡..¬, ®..ÿ) map to themselves; the other 68 map to
// U+0100.. in byte order (space is "Ġ" U+0120, newline "Ċ" U+010A).
#ifndef MOESERVE_SCHEDULER_TOKENIZER_BYTE_LEVEL_H_
#define MOESERVE_SCHEDULER_TOKENIZER_BYTE_LEVEL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace moeserve {

// The code point that byte `b` maps to.
char32_t ByteToCodePoint(uint8_t b);

// The byte that code point `cp` stands for, if it is in the alphabet.
std::optional<uint8_t> CodePointToByte(char32_t cp);

// Appends the byte-level spelling (UTF-8) of `bytes` to `*out`.
void AppendByteLevel(std::string_view bytes, std::string* out);

// The bytes that the token string `token` (well-formed UTF-8) stands for when
// every character is in the alphabet; nullopt otherwise (Hugging Face's
// ByteLevel decoder then keeps the token's own UTF-8 bytes).
std::optional<std::string> ByteLevelToBytes(std::string_view token);

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_TOKENIZER_BYTE_LEVEL_H_
