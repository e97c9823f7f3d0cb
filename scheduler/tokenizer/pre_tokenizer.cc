#include "scheduler/tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "re2/re2.h"

namespace moeserve {
namespace {

using nlohmann::json;

// The GPT-2 pattern that ByteLevel splits with when use_regex is true.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

absl::Status FieldError(absl::string_view field, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", message));
}

bool Flag(const json& config, const char* key, bool fallback) {
  const auto it = config.find(key);
  return it != config.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

struct Segment {
  size_t begin;
  size_t end;
  bool is_match;
};

}  // namespace

absl::StatusOr<PreTokenizer> PreTokenizer::FromJson(const json& config, const std::string& field) {
  PreTokenizer pre;
  std::vector<std::pair<const json*, std::string>> steps;  // each with its path
  if (config.is_object() && config.value("type", "") == "Sequence") {
    const auto it = config.find("pretokenizers");
    if (it == config.end() || !it->is_array()) {
      return FieldError(absl::StrCat(field, ".pretokenizers"), "expected an array");
    }
    for (size_t i = 0; i < it->size(); ++i) {
      steps.emplace_back(&(*it)[i], absl::StrCat(field, ".pretokenizers[", i, "]"));
    }
  } else if (!config.is_null()) {
    steps.emplace_back(&config, std::string(field));
  }

  bool byte_level = false;
  for (const auto& [step, where] : steps) {
    if (!step->is_object() || !step->contains("type") || !(*step)["type"].is_string()) {
      return FieldError(where, "expected an object with a \"type\"");
    }
    const std::string type = (*step)["type"].get<std::string>();
    if (byte_level) {
      return FieldError(where, absl::StrCat("a ", type,
                                            " step after ByteLevel is not supported (ByteLevel "
                                            "must be the last pre-tokenizer)"));
    }
    Step s;
    std::string pattern;
    if (type == "Split") {
      const auto p = step->find("pattern");
      if (p != step->end() && p->is_object() && p->contains("Regex") && (*p)["Regex"].is_string()) {
        pattern = (*p)["Regex"].get<std::string>();
      } else if (p != step->end() && p->is_object() && p->contains("String") &&
                 (*p)["String"].is_string()) {
        pattern = RE2::QuoteMeta((*p)["String"].get<std::string>());
      } else {
        return FieldError(absl::StrCat(where, ".pattern"),
                          "expected {\"Regex\": \"...\"} or {\"String\": \"...\"}");
      }
      const std::string behavior = step->value("behavior", "");
      if (behavior == "Removed") {
        s.behavior = Behavior::kRemoved;
      } else if (behavior == "Isolated") {
        s.behavior = Behavior::kIsolated;
      } else if (behavior == "MergedWithPrevious") {
        s.behavior = Behavior::kMergedWithPrevious;
      } else if (behavior == "MergedWithNext") {
        s.behavior = Behavior::kMergedWithNext;
      } else if (behavior == "Contiguous") {
        s.behavior = Behavior::kContiguous;
      } else {
        return FieldError(absl::StrCat(where, ".behavior"),
                          absl::StrCat("\"", behavior, "\" is not a split behavior"));
      }
      s.invert = Flag(*step, "invert", false);
    } else if (type == "Digits") {
      pattern = R"(\p{N})";  // Rust's char::is_numeric
      s.behavior =
          Flag(*step, "individual_digits", false) ? Behavior::kIsolated : Behavior::kContiguous;
    } else if (type == "ByteLevel") {
      byte_level = true;
      pre.add_prefix_space_ = Flag(*step, "add_prefix_space", true);
      if (!Flag(*step, "use_regex", true)) continue;
      pattern = std::string(kGpt2Pattern);
      s.behavior = Behavior::kIsolated;
    } else {
      return FieldError(where, absl::StrCat("pre-tokenizer type \"", type,
                                            "\" is not supported (supported: Sequence, Split, "
                                            "Digits, ByteLevel)"));
    }
    absl::StatusOr<std::unique_ptr<SplitRegex>> regex = SplitRegex::Create(pattern);
    if (!regex.ok()) return FieldError(where, regex.status().message());
    s.regex = *std::move(regex);
    pre.steps_.push_back(std::move(s));
    if (byte_level) pre.byte_level_regex_ = true;
  }
  if (!byte_level) {
    return FieldError(field, "has no ByteLevel step; only byte-level BPE tokenizers are supported");
  }
  return pre;
}

void PreTokenizer::Split(std::string_view text,
                         absl::FunctionRef<void(std::string_view)> word) const {
  Apply(0, text, word);
}

void PreTokenizer::Apply(size_t step, std::string_view text,
                         absl::FunctionRef<void(std::string_view)> word) const {
  if (text.empty()) return;
  const size_t last = steps_.size() - (byte_level_regex_ ? 1 : 0);  // ByteLevel's own split
  if (step == last && add_prefix_space_ && text.front() != ' ') {
    std::string spaced = " ";
    spaced.append(text);
    ApplyFrom(step, spaced, word);
    return;
  }
  ApplyFrom(step, text, word);
}

void PreTokenizer::ApplyFrom(size_t step, std::string_view text,
                             absl::FunctionRef<void(std::string_view)> word) const {
  if (step == steps_.size()) {
    word(text);
    return;
  }
  const Step& s = steps_[step];
  const auto next = [&](size_t begin, size_t end) {
    if (end > begin) Apply(step + 1, text.substr(begin, end - begin), word);
  };
  if (s.behavior == Behavior::kIsolated) {  // the common case, without a list
    size_t done = 0;
    s.regex->ForEachMatch(text, [&](size_t begin, size_t end) {
      next(done, begin);
      next(begin, end);
      done = end;
    });
    next(done, text.size());
    return;
  }
  // The other behaviors, as Hugging Face's NormalizedString::split has them.
  std::vector<Segment> segments;
  size_t done = 0;
  s.regex->ForEachMatch(text, [&](size_t begin, size_t end) {
    if (done < begin) segments.push_back({done, begin, s.invert});
    segments.push_back({begin, end, !s.invert});
    done = end;
  });
  if (done < text.size()) segments.push_back({done, text.size(), s.invert});

  std::vector<std::pair<size_t, size_t>> pieces;
  bool previous_match = false;
  switch (s.behavior) {
    case Behavior::kRemoved:
      for (const Segment& g : segments) {
        if (!g.is_match) pieces.emplace_back(g.begin, g.end);
      }
      break;
    case Behavior::kIsolated:
      for (const Segment& g : segments) pieces.emplace_back(g.begin, g.end);
      break;
    case Behavior::kContiguous:
      for (const Segment& g : segments) {
        if (g.is_match == previous_match && !pieces.empty()) {
          pieces.back().second = g.end;
        } else {
          pieces.emplace_back(g.begin, g.end);
        }
        previous_match = g.is_match;
      }
      break;
    case Behavior::kMergedWithPrevious:
      for (const Segment& g : segments) {
        if (g.is_match && !previous_match && !pieces.empty()) {
          pieces.back().second = g.end;
        } else {
          pieces.emplace_back(g.begin, g.end);
        }
        previous_match = g.is_match;
      }
      break;
    case Behavior::kMergedWithNext:
      for (auto g = segments.rbegin(); g != segments.rend(); ++g) {
        if (g->is_match && !previous_match && !pieces.empty()) {
          pieces.back().first = g->begin;
        } else {
          pieces.emplace_back(g->begin, g->end);
        }
        previous_match = g->is_match;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
  }
  for (const auto& [begin, end] : pieces) next(begin, end);
}

}  // namespace moeserve
