// Python `str` semantics over UTF-8 std::string. A chat template must split,
// strip, index and print text exactly as CPython does, and CPython counts
// Unicode code points, knows Unicode whitespace and has its own float and
// repr formats; these helpers reproduce them. Every input must be valid UTF-8
// (the interpreter validates text where it enters: template source and
// conversation data); invalid bytes decode as U+FFFD rather than crash.
#ifndef MOESERVE_SCHEDULER_CHAT_PY_STRING_H_
#define MOESERVE_SCHEDULER_CHAT_PY_STRING_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moeserve::jinja {

bool IsValidUtf8(std::string_view s);
// Decodes the code point at s[i] and advances i past it (i < s.size()).
char32_t DecodeCodePointAt(std::string_view s, size_t& i);
std::u32string DecodeUtf8(std::string_view s);
void AppendUtf8(char32_t cp, std::string& out);
std::string EncodeUtf8(std::u32string_view cps);
// len(s): the number of code points.
int64_t CodePointCount(std::string_view s);
bool IsAscii(std::string_view s);

// str.isspace() for one code point.
bool IsPyWhitespace(char32_t cp);

// str.strip / lstrip / rstrip; `chars` unset strips whitespace.
std::string PyStrip(std::string_view s, const std::optional<std::string>& chars, bool left,
                    bool right);
// str.split / str.rsplit. `sep` unset splits on whitespace runs; a set `sep`
// must not be empty (the caller reports Python's ValueError). maxsplit < 0: no
// limit.
std::vector<std::string> PySplit(std::string_view s, const std::optional<std::string>& sep,
                                 int64_t maxsplit);
std::vector<std::string> PyRSplit(std::string_view s, const std::optional<std::string>& sep,
                                  int64_t maxsplit);
// str.splitlines(keepends).
std::vector<std::string> PySplitLines(std::string_view s, bool keepends);
// str.replace(old, new, count); count < 0: all.
std::string PyReplace(std::string_view s, std::string_view old_sub, std::string_view new_sub,
                      int64_t count);
// str.find / str.rfind / str.count over the whole string, in code points.
int64_t PyFind(std::string_view s, std::string_view sub, bool reverse);
int64_t PyCount(std::string_view s, std::string_view sub);

// Unicode case mappings as str.upper(), str.lower(), str.capitalize(),
// str.title() and str.swapcase() (full mappings, no locale).
std::string PyUpper(std::string_view s);
std::string PyLower(std::string_view s);
std::string PyCapitalize(std::string_view s);
std::string PyTitle(std::string_view s);

// markupsafe.escape's text: & < > " ' as HTML entities.
std::string HtmlEscape(std::string_view s);

// repr(float) (also str(float)): shortest round trip, e.g. 1.0, 0.1, 1e+16.
std::string PyFloatRepr(double v);
// repr(str): quoted with ' (or " when the text holds ' but no "), escapes.
std::string PyStringRepr(std::string_view s);

// Python slice(start, stop, step).indices(length) enumerated: the selected
// positions, in order. step must not be 0.
std::vector<int64_t> SliceIndices(int64_t length, std::optional<int64_t> start,
                                  std::optional<int64_t> stop, std::optional<int64_t> step);

}  // namespace moeserve::jinja

#endif  // MOESERVE_SCHEDULER_CHAT_PY_STRING_H_
