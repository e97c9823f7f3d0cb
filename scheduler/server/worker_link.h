// The coordinator's side of one connected worker: the engine thread hands it
// a StepPlan and waits for the StepResult; the gRPC handler thread of the
// worker's Connect stream takes the plan, writes it, reads the result and
// hands it back. Thread safe.
#ifndef MOESERVE_SCHEDULER_SERVER_WORKER_LINK_H_
#define MOESERVE_SCHEDULER_SERVER_WORKER_LINK_H_

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "moeserve/worker/v1/worker.pb.h"

namespace moeserve {

class WorkerLink {
 public:
  explicit WorkerLink(worker::v1::Register registration) : registration_(std::move(registration)) {}

  const worker::v1::Register& registration() const { return registration_; }

  // Engine thread. Sends `plan` and waits for its result. UNAVAILABLE when
  // the worker is lost or does not answer within `timeout`; the link is then
  // broken for good.
  absl::StatusOr<worker::v1::StepResult> RunStep(const worker::v1::StepPlan& plan,
                                                 absl::Duration timeout);

  // Handler thread. Waits up to `timeout` for the next plan; nullopt when
  // there is none yet. Returns nullopt at once when the link is broken.
  std::optional<worker::v1::StepPlan> TakePlan(absl::Duration timeout);
  // Handler thread: the result of the plan last taken.
  void Deliver(worker::v1::StepResult result);
  // Either side: the worker is gone. Pending and later RunStep calls fail
  // with UNAVAILABLE naming `reason`.
  void Break(const std::string& reason);
  bool broken() const;

 private:
  const worker::v1::Register registration_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::optional<worker::v1::StepPlan> plan_;      // handed over, not yet taken
  std::optional<worker::v1::StepResult> result_;  // delivered, not yet collected
  std::string broken_reason_;                     // empty while healthy
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SERVER_WORKER_LINK_H_
