#include "scheduler/server/chat_output_parser.h"

#include <algorithm>
#include <utility>

#include "nlohmann/json.hpp"

namespace moeserve {
namespace {

constexpr std::string_view kThinkOpen = "<think>";
constexpr std::string_view kThinkClose = "</think>";
constexpr std::string_view kDeepSeekCallsBegin = "<｜tool▁calls▁begin｜>";
constexpr std::string_view kDeepSeekCallsEnd = "<｜tool▁calls▁end｜>";
constexpr std::string_view kDeepSeekCallBegin = "<｜tool▁call▁begin｜>";
constexpr std::string_view kDeepSeekCallEnd = "<｜tool▁call▁end｜>";
constexpr std::string_view kDeepSeekSep = "<｜tool▁sep｜>";
constexpr std::string_view kQwenCallBegin = "<tool_call>";
constexpr std::string_view kQwenCallEnd = "</tool_call>";

bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }
bool StartsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool EndsWith(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}
std::string_view StripLeading(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  return s;
}
std::string_view Strip(std::string_view s) {
  s = StripLeading(s);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

// Length of the longest suffix of `text` that is a proper prefix of `marker`.
size_t PartialMarker(std::string_view text, std::string_view marker) {
  for (size_t n = std::min(text.size(), marker.size() - 1); n > 0; --n) {
    if (text.substr(text.size() - n) == marker.substr(0, n)) return n;
  }
  return 0;
}

bool AllWhitespace(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return IsSpace(c); });
}

}  // namespace

bool ParseToolCall(ToolCallFormat format, std::string_view body, ParsedToolCall& call) {
  if (format == ToolCallFormat::kDeepSeek) {
    const size_t sep = body.find(kDeepSeekSep);
    if (sep == std::string_view::npos) return false;
    const std::string_view left = body.substr(0, sep);
    const std::string_view right = body.substr(sep + kDeepSeekSep.size());
    const size_t fence = right.find("```json");
    if (fence != std::string_view::npos) {  // V3/R1: TYPE<sep>NAME\n```json\nARGS\n```
      call.name = std::string(Strip(right.substr(0, fence)));
      std::string_view args = right.substr(fence + 7);
      const size_t close = args.rfind("```");
      if (close == std::string_view::npos) return false;
      call.arguments = std::string(Strip(args.substr(0, close)));
    } else {  // V3.1: NAME<sep>ARGS
      call.name = std::string(Strip(left));
      call.arguments = std::string(Strip(right));
    }
    return !call.name.empty();
  }
  if (format == ToolCallFormat::kQwen3) {
    const std::string_view text = Strip(body);
    nlohmann::ordered_json parsed =
        nlohmann::ordered_json::parse(text.begin(), text.end(), nullptr, false);
    if (parsed.is_discarded() || !parsed.is_object()) return false;
    auto name = parsed.find("name");
    if (name == parsed.end() || !name->is_string()) return false;
    call.name = name->get<std::string>();
    auto args = parsed.find("arguments");
    if (args == parsed.end() || args->is_null()) {
      call.arguments = "{}";
    } else if (args->is_string()) {
      call.arguments = args->get<std::string>();
    } else {
      call.arguments = args->dump(-1, ' ', false, nlohmann::detail::error_handler_t::replace);
    }
    return !call.name.empty();
  }
  return false;
}

ChatOutputParser::ChatOutputParser(Options options)
    : options_(options),
      mode_(!options.reasoning            ? Mode::kContent
            : options.starts_in_reasoning ? Mode::kReasoning
                                          : Mode::kStart) {}

ParsedOutput ChatOutputParser::Push(std::string_view text) {
  ParsedOutput out;
  pending_.append(text.data(), text.size());
  Step(out, /*final=*/false);
  return out;
}

ParsedOutput ChatOutputParser::Finish() {
  ParsedOutput out;
  Step(out, /*final=*/true);
  if (mode_ == Mode::kToolCalls) FlushToolCalls(out, /*closed=*/false);
  return out;
}

void ChatOutputParser::Step(ParsedOutput& out, bool final) {
  while (true) {
    switch (mode_) {
      case Mode::kStart: {
        const std::string_view head = StripLeading(pending_);
        if (StartsWith(head, kThinkOpen)) {
          pending_.erase(0, pending_.size() - head.size() + kThinkOpen.size());
          mode_ = Mode::kReasoning;
          continue;
        }
        if (!final && kThinkOpen.substr(0, head.size()) == head) return;  // undecided
        mode_ = Mode::kContent;
        continue;
      }
      case Mode::kReasoning: {
        const size_t close = pending_.find(kThinkClose);
        std::string_view ready = pending_;
        size_t consumed = pending_.size();
        if (close != std::string::npos) {
          ready = ready.substr(0, close);
          while (!ready.empty() && ready.back() == '\n') ready.remove_suffix(1);
          consumed = close + kThinkClose.size();
        } else if (!final) {
          // Hold back what could start "</think>" and the newlines before it.
          size_t keep = PartialMarker(ready, kThinkClose);
          while (keep < ready.size() && ready[ready.size() - keep - 1] == '\n') ++keep;
          ready.remove_suffix(keep);
          consumed = ready.size();
        } else {
          while (!ready.empty() && ready.back() == '\n') ready.remove_suffix(1);
        }
        if (!reasoning_started_) {
          const size_t lead = ready.find_first_not_of('\n');
          ready.remove_prefix(lead == std::string_view::npos ? ready.size() : lead);
          if (!ready.empty()) reasoning_started_ = true;
        }
        out.reasoning.append(ready.data(), ready.size());
        pending_.erase(0, consumed);
        if (close == std::string::npos) return;
        mode_ = Mode::kContent;
        content_started_ = false;  // the newlines after </think> are not content
        continue;
      }
      case Mode::kContent: {
        if (!content_started_ && options_.reasoning) {
          const size_t lead = pending_.find_first_not_of('\n');
          pending_.erase(0, lead == std::string::npos ? pending_.size() : lead);
          if (pending_.empty()) return;
        }
        content_started_ = true;
        size_t at = std::string::npos;
        std::string_view marker;
        std::vector<std::string_view> markers;
        if (options_.tool_calls == ToolCallFormat::kDeepSeek) {
          markers = {kDeepSeekCallsBegin, kDeepSeekCallBegin};
        } else if (options_.tool_calls == ToolCallFormat::kQwen3) {
          markers = {kQwenCallBegin};
        }
        for (std::string_view m : markers) {
          const size_t found = pending_.find(m);
          if (found < at) {
            at = found;
            marker = m;
          }
        }
        size_t ready = pending_.size();
        if (at != std::string::npos) {
          ready = at;
        } else if (!final) {
          size_t keep = 0;
          for (std::string_view m : markers) keep = std::max(keep, PartialMarker(pending_, m));
          // The newline a template puts before a call is not content either.
          while (!markers.empty() && keep < ready && pending_[ready - keep - 1] == '\n') ++keep;
          ready -= keep;
        }
        // Whitespace between tool calls (or after the last) is not content;
        // it waits until what follows it decides.
        std::string_view text(pending_.data(), ready);
        if (at != std::string::npos) {
          while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
        }
        if (saw_tool_call_ && AllWhitespace(text)) {
          if (at == std::string::npos && !final) return;
        } else {
          out.content.append(text.data(), text.size());
        }
        pending_.erase(0, ready);
        if (at == std::string::npos) return;
        tool_text_.clear();
        mode_ = Mode::kToolCalls;
        continue;
      }
      case Mode::kToolCalls: {
        tool_text_ += pending_;
        pending_.clear();
        if (options_.tool_calls == ToolCallFormat::kQwen3) {
          const size_t end = tool_text_.find(kQwenCallEnd);
          if (end == std::string::npos) return;
          const std::string whole = tool_text_.substr(0, end + kQwenCallEnd.size());
          pending_ = tool_text_.substr(whole.size());
          tool_text_ = whole;
          FlushToolCalls(out, /*closed=*/true);
          mode_ = Mode::kContent;
          continue;
        }
        // DeepSeek: every complete call now, the section's end when it comes.
        size_t end = tool_text_.find(kDeepSeekCallsEnd);
        if (end == std::string::npos) {
          // Calls that closed are returned at once; the open one waits.
          const size_t last = tool_text_.rfind(kDeepSeekCallEnd);
          if (last == std::string::npos) return;
          const size_t cut = last + kDeepSeekCallEnd.size();
          std::string rest = tool_text_.substr(cut);
          tool_text_.resize(cut);
          FlushToolCalls(out, /*closed=*/true);
          tool_text_ = std::move(rest);
          mode_ = Mode::kToolCalls;
          return;
        }
        pending_ = tool_text_.substr(end + kDeepSeekCallsEnd.size());
        tool_text_.resize(end);
        FlushToolCalls(out, /*closed=*/true);
        mode_ = Mode::kContent;
        continue;
      }
    }
  }
}

void ChatOutputParser::FlushToolCalls(ParsedOutput& out, bool closed) {
  const std::string text = std::move(tool_text_);
  tool_text_.clear();
  std::vector<ParsedToolCall> calls;
  bool ok = true;
  if (options_.tool_calls == ToolCallFormat::kQwen3) {
    ok = closed && StartsWith(text, kQwenCallBegin) && EndsWith(text, kQwenCallEnd);
    ParsedToolCall call;
    if (ok) {
      ok = ParseToolCall(
          ToolCallFormat::kQwen3,
          std::string_view(text).substr(kQwenCallBegin.size(),
                                        text.size() - kQwenCallBegin.size() - kQwenCallEnd.size()),
          call);
    }
    if (ok) calls.push_back(std::move(call));
  } else {
    // Calls between <｜tool▁call▁begin｜> and <｜tool▁call▁end｜>; anything
    // else but the section's begin marker and whitespace makes it content.
    std::string_view rest(text);
    if (StartsWith(rest, kDeepSeekCallsBegin)) rest.remove_prefix(kDeepSeekCallsBegin.size());
    while (ok && !AllWhitespace(rest)) {
      rest = StripLeading(rest);
      const size_t end = rest.find(kDeepSeekCallEnd);
      ParsedToolCall call;
      ok = StartsWith(rest, kDeepSeekCallBegin) && end != std::string_view::npos &&
           ParseToolCall(ToolCallFormat::kDeepSeek,
                         rest.substr(kDeepSeekCallBegin.size(), end - kDeepSeekCallBegin.size()),
                         call);
      if (ok) {
        calls.push_back(std::move(call));
        rest.remove_prefix(end + kDeepSeekCallEnd.size());
      }
    }
  }
  if (!ok) {
    out.content += text;  // not a call after all: the model's text, unchanged
    return;
  }
  if (!calls.empty()) saw_tool_call_ = true;
  for (ParsedToolCall& c : calls) out.tool_calls.push_back(std::move(c));
}

}  // namespace moeserve
