// What Welcome tells a worker about its group, checked against the model:
// rank and size, the communicator to form, the expert placement and how
// steps run. Pure: every value the coordinator sent is checked here.
#ifndef MOESERVE_RUNTIME_WORKER_GROUP_SETUP_H_
#define MOESERVE_RUNTIME_WORKER_GROUP_SETUP_H_

#include <chrono>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "moeserve/worker/v1/worker.pb.h"
#include "runtime/model/config.h"
#include "runtime/parallel/communicator.h"
#include "runtime/parallel/expert_placement.h"

namespace moeserve {

struct GroupSetup {
  uint32_t rank = 0;
  uint32_t world_size = 1;
  std::string communicator = "local";  // "local", "gloo" or "nccl"
  std::string prefix;                  // the group's keys in the rendezvous store
  std::chrono::milliseconds timeout{30000};
  ExpertPlacement placement;  // one LayerPlacement per model layer
  int micro_batches = 1;
  bool overlap = false;
  EmulatedLink link;
  int64_t max_batch_tokens = 0;     // the step workspace's plan; 0: the worker's default
  int64_t max_exchange_tokens = 0;  // tokens of a rank per exchange; 0: the worker's default

  // Whether a model loaded for `other` serves this group as it is (only
  // the communicator changes).
  bool SameModelAs(const GroupSetup& other) const;
};

// FailedPrecondition naming the field for a Welcome this worker cannot follow.
absl::StatusOr<GroupSetup> GroupSetupFromWelcome(const worker::v1::Welcome& welcome,
                                                 const ModelConfig& config);

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_WORKER_GROUP_SETUP_H_
