#include "scheduler/server/worker_link.h"

#include "absl/strings/str_cat.h"

namespace moeserve {

void WorkerLink::SetOnBreak(std::function<void()> on_break) {
  std::lock_guard<std::mutex> guard(on_break_mu_);
  on_break_ = std::move(on_break);
  if (broken() && on_break_) on_break_();
}

void WorkerLink::RunOnBreak() {
  std::lock_guard<std::mutex> guard(on_break_mu_);
  if (on_break_) on_break_();
}

void WorkerLink::SendWelcome(worker::v1::Welcome welcome) {
  std::lock_guard<std::mutex> lock(mu_);
  welcome_ = std::move(welcome);
  ready_.reset();
  cv_.notify_all();
}

std::optional<worker::v1::Welcome> WorkerLink::TakeWelcome(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
               [&] { return welcome_.has_value() || !broken_reason_.empty(); });
  if (!broken_reason_.empty() || !welcome_.has_value()) return std::nullopt;
  std::optional<worker::v1::Welcome> w = std::move(welcome_);
  welcome_.reset();
  return w;
}

void WorkerLink::DeliverReady(std::string error) {
  std::lock_guard<std::mutex> lock(mu_);
  ready_ = std::move(error);
  cv_.notify_all();
}

std::optional<std::string> WorkerLink::ready() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ready_;
}

absl::Status WorkerLink::SendPlan(worker::v1::StepPlan plan) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!broken_reason_.empty()) return absl::UnavailableError(broken_reason_);
  awaited_step_ = plan.step();
  plan_ = std::move(plan);
  result_.reset();
  cv_.notify_all();
  return absl::OkStatus();
}

absl::StatusOr<worker::v1::StepResult> WorkerLink::AwaitResult(absl::Time deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  const bool done = cv_.wait_until(lock, absl::ToChronoTime(deadline),
                                   [&] { return result_.has_value() || !broken_reason_.empty(); });
  if (!broken_reason_.empty()) return absl::UnavailableError(broken_reason_);
  if (!done) {
    broken_reason_ = absl::StrCat("worker ", registration_.worker_id(), " (rank ", rank_,
                                  ") did not answer step ", awaited_step_.value_or(0), " in time");
    cv_.notify_all();
    const std::string reason = broken_reason_;
    lock.unlock();
    RunOnBreak();
    return absl::UnavailableError(reason);
  }
  worker::v1::StepResult result = std::move(*result_);
  result_.reset();
  awaited_step_.reset();
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
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!broken_reason_.empty()) return;
    broken_reason_ = reason;
    cv_.notify_all();
  }
  RunOnBreak();
}

bool WorkerLink::broken() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !broken_reason_.empty();
}

std::string WorkerLink::broken_reason() const {
  std::lock_guard<std::mutex> lock(mu_);
  return broken_reason_;
}

}  // namespace moeserve
