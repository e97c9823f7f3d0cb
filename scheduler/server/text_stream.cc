#include "scheduler/server/text_stream.h"

#include <algorithm>
#include <string_view>
#include <utility>

namespace moeserve {

TextStream::TextStream(const Tokenizer& tokenizer, Options options)
    : detokenizer_(tokenizer, DecodeOptions{.skip_special_tokens = options.skip_special_tokens}),
      options_(std::move(options)) {}

TextStream::Update TextStream::Push(int32_t id) {
  Update update;
  if (stopped_) return update;
  ++num_tokens_;
  if (id >= 0) {
    absl::StatusOr<std::string> delta = detokenizer_.Push(id);
    if (delta.ok()) pending_ += *delta;
  }
  if (options_.stop.empty()) {
    update.text.swap(pending_);
    return update;
  }
  if (num_tokens_ >= options_.min_tokens) {
    // Everything before pending_ holds no stop string and no start of one, so
    // the earliest occurrence in pending_ is the earliest in the whole text.
    size_t first = std::string_view::npos;
    const std::string* match = nullptr;
    for (const std::string& s : options_.stop) {
      const size_t at = pending_.find(s);
      if (at < first) {
        first = at;
        match = &s;
      }
    }
    if (match != nullptr) {
      stopped_ = true;
      stop_string_ = *match;
      update.stopped = true;
      update.text = pending_.substr(0, first);
      pending_.clear();
      return update;
    }
  }
  // A held suffix equals the start of a stop string, which starts on a
  // character boundary: what goes out ends on one.
  const size_t held = HeldBackBytes();
  update.text = pending_.substr(0, pending_.size() - held);
  pending_.erase(0, pending_.size() - held);
  return update;
}

std::string TextStream::Finish() {
  if (stopped_) return "";
  std::string rest;
  rest.swap(pending_);
  rest += detokenizer_.Finish();
  return rest;
}

size_t TextStream::HeldBackBytes() const {
  const std::string_view text(pending_);
  size_t held = 0;
  for (const std::string& s : options_.stop) {
    // Candidates longer than the best so far, shorter than the stop string.
    for (size_t n = std::min(text.size(), s.size() - 1); n > held; --n) {
      if (text.substr(text.size() - n) == std::string_view(s).substr(0, n)) {
        held = n;
        break;
      }
    }
  }
  return held;
}

}  // namespace moeserve
