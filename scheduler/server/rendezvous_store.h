// The key-value store through which the ranks of a Gloo or NCCL group
// exchange their addresses while the group forms (Coordinator.StoreSet /
// StoreGet). Keys are "moeserve/group-<generation>/...": only the group the
// coordinator is forming now may write or read, and keys, values and their
// count are bounded, so no caller can fill the coordinator's memory or wedge
// a later group by writing a future generation's keys.
#ifndef MOESERVE_SCHEDULER_SERVER_RENDEZVOUS_STORE_H_
#define MOESERVE_SCHEDULER_SERVER_RENDEZVOUS_STORE_H_

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace moeserve {

// Thread safe.
class RendezvousStore {
 public:
  struct Limits {
    // Gloo's and NCCL's keys are short ("moeserve/group-7/3"); far above that.
    size_t max_key_bytes = 256;
    // A rank's full-mesh address list grows with the group: ~40 bytes per
    // peer, so 4096 ranks need ~160 KiB.
    size_t max_value_bytes = 1 << 20;
    // A group of 4096 ranks sets a few keys per rank.
    size_t max_keys = 16384;
    // All values of the current generation together.
    size_t max_total_value_bytes = size_t{256} << 20;
  };

  RendezvousStore() = default;
  explicit RendezvousStore(Limits limits) : limits_(limits) {}

  // The group generation of `key` ("moeserve/group-<n>/..."), or
  // InvalidArgument naming the key when it is not a group key.
  static absl::StatusOr<uint64_t> KeyGeneration(const std::string& key);

  // Stores `value` under `key` while `current_generation` is forming (0: no
  // group has been formed yet). A newer generation than the stored keys'
  // drops them. Errors, each naming the key and the bound:
  //   InvalidArgument     not a group key, key or value too large;
  //   FailedPrecondition  the key is of another generation than the current;
  //   ResourceExhausted   too many keys or too many value bytes.
  absl::Status Set(const std::string& key, std::string value, uint64_t current_generation);

  // The values of all `keys`, or an empty vector while any is missing. The
  // same key checks as Set (a key of another generation is refused, not
  // reported missing).
  absl::StatusOr<std::vector<std::string>> Get(const std::vector<std::string>& keys,
                                               uint64_t current_generation);

  size_t size() const;

 private:
  absl::Status CheckKey(const std::string& key, uint64_t current_generation) const;
  void SwitchTo(uint64_t generation);  // requires mu_

  const Limits limits_;
  mutable std::mutex mu_;
  uint64_t generation_ = 0;       // of the keys in values_
  size_t total_value_bytes_ = 0;  // sum of values_' sizes
  std::map<std::string, std::string> values_;
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SERVER_RENDEZVOUS_STORE_H_
