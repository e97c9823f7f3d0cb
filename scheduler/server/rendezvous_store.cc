#include "scheduler/server/rendezvous_store.h"

#include "absl/strings/str_cat.h"

namespace moeserve {
namespace {

constexpr char kPrefix[] = "moeserve/group-";

// The key as errors show it: at most 100 bytes.
std::string Shown(const std::string& key) {
  return key.size() <= 100 ? key : absl::StrCat(key.substr(0, 100), "...");
}

}  // namespace

absl::StatusOr<uint64_t> RendezvousStore::KeyGeneration(const std::string& key) {
  const std::string prefix = kPrefix;
  size_t i = prefix.size();
  uint64_t n = 0;
  bool digits = false;
  if (key.compare(0, prefix.size(), prefix) == 0) {
    for (; i < key.size() && key[i] >= '0' && key[i] <= '9'; ++i) {
      const auto d = static_cast<uint64_t>(key[i] - '0');
      if (n > (UINT64_MAX - d) / 10) {
        digits = false;
        break;
      }
      n = n * 10 + d;
      digits = true;
    }
  }
  if (!digits || n == 0 || i >= key.size() || key[i] != '/') {
    return absl::InvalidArgumentError(absl::StrCat(
        "rendezvous key \"", Shown(key), "\" is not a group key (moeserve/group-<n>/...)"));
  }
  return n;
}

absl::Status RendezvousStore::CheckKey(const std::string& key, uint64_t current_generation) const {
  if (key.size() > limits_.max_key_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("rendezvous key \"", Shown(key), "\" has ",
                                                   key.size(), " bytes; at most ",
                                                   limits_.max_key_bytes, " are accepted"));
  }
  auto generation = KeyGeneration(key);
  if (!generation.ok()) return generation.status();
  if (*generation != current_generation) {
    return absl::FailedPreconditionError(
        current_generation == 0
            ? absl::StrCat("rendezvous key \"", Shown(key), "\" is for group ", *generation,
                           ", but no group is forming")
            : absl::StrCat("rendezvous key \"", Shown(key), "\" is for group ", *generation,
                           ", but the group forming now is ", current_generation));
  }
  return absl::OkStatus();
}

void RendezvousStore::SwitchTo(uint64_t generation) {
  if (generation == generation_) return;
  values_.clear();  // an older group's addresses are stale
  total_value_bytes_ = 0;
  generation_ = generation;
}

absl::Status RendezvousStore::Set(const std::string& key, std::string value,
                                  uint64_t current_generation) {
  if (absl::Status s = CheckKey(key, current_generation); !s.ok()) return s;
  if (value.size() > limits_.max_value_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("rendezvous value of key \"", Shown(key),
                                                   "\" has ", value.size(), " bytes; at most ",
                                                   limits_.max_value_bytes, " are accepted"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  SwitchTo(current_generation);
  auto it = values_.find(key);
  const size_t replaced = it == values_.end() ? 0 : it->second.size();
  if (it == values_.end() && values_.size() >= limits_.max_keys) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the rendezvous store holds ", values_.size(), " keys of group ", current_generation,
        ", the most it accepts; key \"", Shown(key), "\" was refused"));
  }
  if (total_value_bytes_ - replaced + value.size() > limits_.max_total_value_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the rendezvous store's values of group ", current_generation, " would exceed ",
        limits_.max_total_value_bytes, " bytes; key \"", Shown(key), "\" was refused"));
  }
  total_value_bytes_ = total_value_bytes_ - replaced + value.size();
  values_[key] = std::move(value);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> RendezvousStore::Get(const std::vector<std::string>& keys,
                                                              uint64_t current_generation) {
  if (keys.size() > limits_.max_keys) {
    return absl::InvalidArgumentError(absl::StrCat("a rendezvous read of ", keys.size(),
                                                   " keys; at most ", limits_.max_keys,
                                                   " are accepted"));
  }
  for (const std::string& key : keys) {
    if (absl::Status s = CheckKey(key, current_generation); !s.ok()) return s;
  }
  std::lock_guard<std::mutex> lock(mu_);
  SwitchTo(current_generation);
  std::vector<std::string> out;
  out.reserve(keys.size());
  for (const std::string& key : keys) {
    auto it = values_.find(key);
    if (it == values_.end()) return std::vector<std::string>{};
    out.push_back(it->second);
  }
  return out;
}

size_t RendezvousStore::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return values_.size();
}

}  // namespace moeserve
