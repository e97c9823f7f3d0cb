#include "scheduler/tokenizer/byte_level.h"

#include <array>

#include "scheduler/tokenizer/utf8.h"

namespace moeserve {
namespace {

bool Printable(int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; }

struct Alphabet {
  std::array<char32_t, 256> to_cp{};
  std::array<int16_t, 0x144> to_byte{};  // -1: not in the alphabet
  std::array<std::string, 256> utf8;     // to_cp in UTF-8
};

const Alphabet& GetAlphabet() {
  static const Alphabet* alphabet = [] {
    auto* a = new Alphabet;
    a->to_byte.fill(-1);
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      a->to_cp[b] = Printable(b) ? static_cast<char32_t>(b) : next++;
      a->to_byte[a->to_cp[b]] = static_cast<int16_t>(b);
      AppendUtf8(a->to_cp[b], &a->utf8[b]);
    }
    return a;
  }();
  return *alphabet;
}

}  // namespace

char32_t ByteToCodePoint(uint8_t b) { return GetAlphabet().to_cp[b]; }

std::optional<uint8_t> CodePointToByte(char32_t cp) {
  const Alphabet& a = GetAlphabet();
  if (cp >= a.to_byte.size() || a.to_byte[cp] < 0) return std::nullopt;
  return static_cast<uint8_t>(a.to_byte[cp]);
}

void AppendByteLevel(std::string_view bytes, std::string* out) {
  const Alphabet& a = GetAlphabet();
  for (char c : bytes) out->append(a.utf8[static_cast<uint8_t>(c)]);
}

std::optional<std::string> ByteLevelToBytes(std::string_view token) {
  std::string bytes;
  bytes.reserve(token.size());
  while (!token.empty()) {
    size_t length;
    const std::optional<uint8_t> b = CodePointToByte(DecodeUtf8(token, &length));
    if (!b.has_value()) return std::nullopt;
    bytes.push_back(static_cast<char>(*b));
    token.remove_prefix(length);
  }
  return bytes;
}

}  // namespace moeserve
