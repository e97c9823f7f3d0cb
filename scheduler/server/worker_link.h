// The coordinator's side of one connected worker. The engine thread hands it
// the Welcome and then one StepPlan per step and collects the answers; the
// gRPC handler thread of the worker's Connect stream writes what it is given
// and delivers what the worker sends. Thread safe.
#ifndef MOESERVE_SCHEDULER_SERVER_WORKER_LINK_H_
#define MOESERVE_SCHEDULER_SERVER_WORKER_LINK_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "moeserve/worker/v1/worker.pb.h"

namespace moeserve {

class WorkerLink {
 public:
  WorkerLink(worker::v1::Register registration, uint32_t rank)
      : registration_(std::move(registration)), rank_(rank) {}

  const worker::v1::Register& registration() const { return registration_; }
  uint32_t rank() const { return rank_; }

  // Handler thread: called by Break, e.g. to cancel a stream blocked in Read.
  // Once SetOnBreak(nullptr) returns, the previous callback is not running
  // and will not run again, so what it captured may go.
  void SetOnBreak(std::function<void()> on_break);

  // --- Forming the group.
  // Engine thread: the Welcome to send.
  void SendWelcome(worker::v1::Welcome welcome);
  // Handler thread: waits up to `timeout` for it; nullopt if none yet or broken.
  std::optional<worker::v1::Welcome> TakeWelcome(absl::Duration timeout);
  // Handler thread: the worker's Ready (error empty on success).
  void DeliverReady(std::string error);
  // Engine thread: nullopt until Ready arrived, then its error ("" for ready).
  std::optional<std::string> ready() const;

  // --- Steps.
  // Engine thread: hands `plan` over; AwaitResult then waits for its answer.
  // UNAVAILABLE when the worker is lost or does not answer by `deadline`; the
  // link is then broken for good.
  absl::Status SendPlan(worker::v1::StepPlan plan);
  absl::StatusOr<worker::v1::StepResult> AwaitResult(absl::Time deadline);

  // Handler thread. Waits up to `timeout` for the next plan; nullopt when
  // there is none yet. Returns nullopt at once when the link is broken.
  std::optional<worker::v1::StepPlan> TakePlan(absl::Duration timeout);
  // Handler thread: the result of the plan last taken.
  void Deliver(worker::v1::StepResult result);

  // Either side: the worker is gone, or its group is being formed again.
  // Later calls fail with UNAVAILABLE naming the first `reason`.
  void Break(const std::string& reason);
  bool broken() const;
  std::string broken_reason() const;

 private:
  const worker::v1::Register registration_;
  const uint32_t rank_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::mutex on_break_mu_;  // held while on_break_ runs or changes
  std::function<void()> on_break_;
  std::optional<worker::v1::Welcome> welcome_;    // handed over, not yet taken
  std::optional<std::string> ready_;              // the worker's Ready
  std::optional<worker::v1::StepPlan> plan_;      // handed over, not yet taken
  std::optional<uint64_t> awaited_step_;          // sent, result not yet collected
  std::optional<worker::v1::StepResult> result_;  // delivered, not yet collected
  std::string broken_reason_;                     // empty while healthy

  void RunOnBreak();
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SERVER_WORKER_LINK_H_
