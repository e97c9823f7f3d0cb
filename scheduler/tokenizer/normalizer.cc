#include "scheduler/tokenizer/normalizer.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace moeserve {
namespace {

using nlohmann::json;

absl::StatusOr<const icu::Normalizer2*> Form(const std::string& type, const std::string& field) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* form = nullptr;
  if (type == "NFC") form = icu::Normalizer2::getNFCInstance(status);
  if (type == "NFD") form = icu::Normalizer2::getNFDInstance(status);
  if (type == "NFKC") form = icu::Normalizer2::getNFKCInstance(status);
  if (type == "NFKD") form = icu::Normalizer2::getNFKDInstance(status);
  if (form == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": normalizer type \"", type,
                     "\" is not supported (supported: NFC, NFD, NFKC, NFKD, Sequence)"));
  }
  if (U_FAILURE(status)) {
    return absl::InternalError(
        absl::StrCat(field, ": ICU has no ", type, " data: ", u_errorName(status)));
  }
  return form;
}

absl::Status Collect(const json& config, const std::string& field,
                     std::vector<const icu::Normalizer2*>* forms) {
  if (config.is_null()) return absl::OkStatus();
  if (!config.is_object() || !config.contains("type") || !config["type"].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": expected an object with a \"type\""));
  }
  const std::string type = config["type"].get<std::string>();
  if (type == "Sequence") {
    const auto it = config.find("normalizers");
    if (it == config.end() || !it->is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".normalizers: expected an array of normalizers"));
    }
    for (size_t i = 0; i < it->size(); ++i) {
      absl::Status s = Collect((*it)[i], absl::StrCat(field, ".normalizers[", i, "]"), forms);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  absl::StatusOr<const icu::Normalizer2*> form = Form(type, field);
  if (!form.ok()) return form.status();
  forms->push_back(*form);
  return absl::OkStatus();
}

bool IsAscii(std::string_view text) {
  for (char c : text) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<Normalizer> Normalizer::FromJson(const json& config, const std::string& field) {
  Normalizer normalizer;
  absl::Status s = Collect(config, std::string(field), &normalizer.forms_);
  if (!s.ok()) return s;
  return normalizer;
}

bool Normalizer::Normalize(std::string_view text, std::string* out) const {
  // ASCII is invariant under all four forms.
  if (forms_.empty() || IsAscii(text)) return false;
  std::string_view current = text;
  std::string buffer;  // holds `current` once a form has changed it
  for (const icu::Normalizer2* form : forms_) {
    UErrorCode status = U_ZERO_ERROR;
    const icu::StringPiece piece(current.data(), static_cast<int32_t>(current.size()));
    if (form->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) continue;
    status = U_ZERO_ERROR;
    std::string next;
    icu::StringByteSink<std::string> sink(&next, static_cast<int32_t>(current.size()));
    form->normalizeUTF8(0, piece, sink, nullptr, status);
    // The input is well-formed UTF-8, so ICU fails only when out of memory;
    // the text then stays as it was.
    if (U_FAILURE(status)) continue;
    buffer = std::move(next);
    current = buffer;
  }
  const bool changed = current.data() != text.data();
  if (changed) *out = std::move(buffer);
  return changed;
}

}  // namespace moeserve
