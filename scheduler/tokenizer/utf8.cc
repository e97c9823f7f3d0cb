#include "scheduler/tokenizer/utf8.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moeserve {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

enum class SeqKind { kValid, kInvalid, kIncomplete };

struct Seq {
  SeqKind kind;
  // kValid: the character's length; kInvalid: the maximal subpart to replace
  // (>= 1); kIncomplete: all `n` bytes, a proper prefix of a character.
  size_t length;
};

// Classifies the sequence at `p` (n >= 1 bytes) by Table 3-7 of the Unicode
// Standard (well-formed byte sequences).
Seq Classify(const unsigned char* p, size_t n) {
  const unsigned char b = p[0];
  if (b < 0x80) return {SeqKind::kValid, 1};
  size_t need;
  unsigned char lo = 0x80;
  unsigned char hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    need = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 3;
    if (b == 0xE0) lo = 0xA0;  // no overlongs
    if (b == 0xED) hi = 0x9F;  // no surrogates
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 4;
    if (b == 0xF0) lo = 0x90;  // no overlongs
    if (b == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {SeqKind::kInvalid, 1};
  }
  for (size_t i = 1; i < need; ++i) {
    if (i >= n) return {SeqKind::kIncomplete, n};
    if (p[i] < lo || p[i] > hi) return {SeqKind::kInvalid, i};
    lo = 0x80;
    hi = 0xBF;
  }
  return {SeqKind::kValid, need};
}

// Length of the leading run of ASCII bytes.
size_t AsciiPrefix(const unsigned char* p, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t word;
    std::memcpy(&word, p + i, 8);
    if (word & 0x8080808080808080ULL) break;
  }
  while (i < n && p[i] < 0x80) ++i;
  return i;
}

// Appends the lossy decoding of p[0, n) to `*out`; returns the length of a
// trailing incomplete character left undecoded (0 when none), or decodes it
// as U+FFFD when `final`.
size_t DecodeLossy(const unsigned char* p, size_t n, bool final, std::string* out) {
  size_t i = 0;
  while (i < n) {
    const size_t ascii = AsciiPrefix(p + i, n - i);
    out->append(reinterpret_cast<const char*>(p + i), ascii);
    i += ascii;
    if (i == n) break;
    const Seq seq = Classify(p + i, n - i);
    switch (seq.kind) {
      case SeqKind::kValid:
        out->append(reinterpret_cast<const char*>(p + i), seq.length);
        break;
      case SeqKind::kInvalid:
        out->append(kReplacement);
        break;
      case SeqKind::kIncomplete:
        if (!final) return seq.length;
        out->append(kReplacement);
        break;
    }
    i += seq.length;
  }
  return 0;
}

}  // namespace

absl::Status ValidateUtf8(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    i += AsciiPrefix(p + i, n - i);
    if (i == n) break;
    const Seq seq = Classify(p + i, n - i);
    if (seq.kind != SeqKind::kValid) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "text is not valid UTF-8: %s at byte offset %d (0x%02x)",
          seq.kind == SeqKind::kIncomplete ? "truncated sequence" : "ill-formed sequence", i,
          p[i]));
    }
    i += seq.length;
  }
  return absl::OkStatus();
}

char32_t DecodeUtf8(std::string_view text, size_t* length) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  if (p[0] < 0x80) {
    *length = 1;
    return p[0];
  }
  if (p[0] < 0xE0) {
    *length = 2;
    return (char32_t{p[0] & 0x1Fu} << 6) | (p[1] & 0x3Fu);
  }
  if (p[0] < 0xF0) {
    *length = 3;
    return (char32_t{p[0] & 0x0Fu} << 12) | (char32_t{p[1] & 0x3Fu} << 6) | (p[2] & 0x3Fu);
  }
  *length = 4;
  return (char32_t{p[0] & 0x07u} << 18) | (char32_t{p[1] & 0x3Fu} << 12) |
         (char32_t{p[2] & 0x3Fu} << 6) | (p[3] & 0x3Fu);
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

void AppendUtf8Lossy(std::string_view bytes, std::string* out) {
  DecodeLossy(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), /*final=*/true,
              out);
}

std::string Utf8StreamDecoder::Push(std::string_view bytes) {
  std::string out;
  if (!held_.empty()) {
    // Settle the held prefix with just enough new bytes; a character spans at
    // most 4 bytes, so the rest can be decoded from `bytes` directly.
    const size_t take = std::min(bytes.size(), size_t{4} - held_.size());
    std::string joined = held_ + std::string(bytes.substr(0, take));
    held_.clear();
    const auto* p = reinterpret_cast<const unsigned char*>(joined.data());
    const Seq seq = Classify(p, joined.size());
    if (seq.kind == SeqKind::kIncomplete) {  // all of `bytes` went in, still short
      held_ = std::move(joined);
      return out;
    }
    out.append(seq.kind == SeqKind::kValid ? joined.substr(0, seq.length)
                                           : std::string(kReplacement));
    // The first seq.length bytes of `joined` are settled; the rest of it came
    // from `bytes` and is decoded again below.
    bytes.remove_prefix(seq.length - (joined.size() - take));
  }
  const size_t left = DecodeLossy(reinterpret_cast<const unsigned char*>(bytes.data()),
                                  bytes.size(), /*final=*/false, &out);
  held_.assign(bytes.substr(bytes.size() - left));
  return out;
}

std::string Utf8StreamDecoder::Finish() {
  std::string out;
  AppendUtf8Lossy(held_, &out);
  held_.clear();
  return out;
}

}  // namespace moeserve
