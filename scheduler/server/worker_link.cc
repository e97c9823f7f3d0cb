#include "scheduler/server/worker_link.h"

#include "absl/strings/str_cat.h"

namespace moeserve {

absl::StatusOr<worker::v1::StepResult> WorkerLink::RunStep(const worker::v1::StepPlan& plan,
                                                           absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!broken_reason_.empty()) return absl::UnavailableError(broken_reason_);
  plan_ = plan;
  result_.reset();
  cv_.notify_all();
  const bool done = cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                                 [&] { return result_.has_value() || !broken_reason_.empty(); });
  if (!broken_reason_.empty()) return absl::UnavailableError(broken_reason_);
  if (!done) {
    broken_reason_ = absl::StrCat("worker ", registration_.worker_id(), " did not answer step ",
                                  plan.step(), " within ", absl::FormatDuration(timeout));
    cv_.notify_all();
    return absl::UnavailableError(broken_reason_);
  }
  worker::v1::StepResult result = std::move(*result_);
  result_.reset();
  return result;
}

std::optional<worker::v1::StepPlan> WorkerLink::TakePlan(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
               [&] { return plan_.has_value() || !broken_reason_.empty(); });
  if (!broken_reason_.empty() || !plan_.has_value()) return std::nullopt;
  std::optional<worker::v1::StepPlan> plan = std::move(plan_);
  plan_.reset();
  return plan;
}

void WorkerLink::Deliver(worker::v1::StepResult result) {
  std::lock_guard<std::mutex> lock(mu_);
  result_ = std::move(result);
  cv_.notify_all();
}

void WorkerLink::Break(const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  if (broken_reason_.empty()) broken_reason_ = reason;
  cv_.notify_all();
}

bool WorkerLink::broken() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !broken_reason_.empty();
}

}  // namespace moeserve
