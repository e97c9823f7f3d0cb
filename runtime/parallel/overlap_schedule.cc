#include "runtime/parallel/overlap_schedule.h"

#include <chrono>
#include <map>
#include <tuple>

#include "absl/strings/str_cat.h"

namespace moeserve {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

bool IsCommunication(StageKind kind) {
  return kind == StageKind::kDispatch || kind == StageKind::kCombine;
}

const char* StageName(StageKind kind) {
  switch (kind) {
    case StageKind::kAttention:
      return "attention";
    case StageKind::kDispatch:
      return "dispatch";
    case StageKind::kShared:
      return "shared";
    case StageKind::kExperts:
      return "experts";
    case StageKind::kCombine:
      return "combine";
    case StageKind::kReduce:
      return "reduce";
  }
  return "?";
}

std::vector<Stage> OverlapSchedule::CommunicationOrder() const {
  std::vector<Stage> order;
  for (const ScheduleStep& s : steps) {
    if (s.action == ScheduleStep::kPost || s.action == ScheduleStep::kInline) {
      order.push_back(s.stage);
    }
  }
  return order;
}

std::string OverlapSchedule::DebugString() const {
  std::string out;
  for (const ScheduleStep& s : steps) {
    const char* action = s.action == ScheduleStep::kCompute ? ""
                         : s.action == ScheduleStep::kPost  ? "post "
                         : s.action == ScheduleStep::kWait  ? "wait "
                                                            : "inline ";
    absl::StrAppend(&out, out.empty() ? "" : " ", action, StageName(s.stage.kind), "(",
                    s.stage.micro_batch == 0 ? "A" : "B", s.stage.layer, ")");
  }
  return out;
}

OverlapSchedule BuildOverlapSchedule(const std::vector<bool>& moe_layers, int micro_batches,
                                     bool overlap) {
  const int mbs = micro_batches >= 2 ? 2 : 1;
  overlap = overlap && mbs == 2;
  OverlapSchedule s;
  auto add = [&](ScheduleStep::Action a, StageKind k, int mb, int64_t l) {
    s.steps.push_back({a, {k, mb, l}});
  };
  const auto layers = static_cast<int64_t>(moe_layers.size());
  if (!overlap) {
    // One micro-batch after the other, each through a whole layer at a time.
    for (int64_t l = 0; l < layers; ++l) {
      for (int mb = 0; mb < mbs; ++mb) {
        add(ScheduleStep::kCompute, StageKind::kAttention, mb, l);
        if (!moe_layers[static_cast<size_t>(l)]) continue;
        add(ScheduleStep::kInline, StageKind::kDispatch, mb, l);
        add(ScheduleStep::kCompute, StageKind::kShared, mb, l);
        add(ScheduleStep::kCompute, StageKind::kExperts, mb, l);
        add(ScheduleStep::kInline, StageKind::kCombine, mb, l);
        add(ScheduleStep::kCompute, StageKind::kReduce, mb, l);
      }
    }
    return s;
  }
  // A combine still to reduce, per micro-batch: the layer, or -1.
  int64_t pending[2] = {-1, -1};
  auto finish = [&](int mb) {
    if (pending[mb] < 0) return;
    add(ScheduleStep::kWait, StageKind::kCombine, mb, pending[mb]);
    add(ScheduleStep::kCompute, StageKind::kReduce, mb, pending[mb]);
    pending[mb] = -1;
  };
  for (int64_t l = 0; l < layers; ++l) {
    const bool moe = moe_layers[static_cast<size_t>(l)];
    for (int mb = 0; mb < 2; ++mb) {
      finish(mb);
      add(ScheduleStep::kCompute, StageKind::kAttention, mb, l);
      if (moe) add(ScheduleStep::kPost, StageKind::kDispatch, mb, l);
    }
    if (!moe) continue;
    // The shared experts need no exchanged rows: each micro-batch's run
    // while its own dispatch is in flight, as DeepSeek's schedule does.
    for (int mb = 0; mb < 2; ++mb) {
      add(ScheduleStep::kCompute, StageKind::kShared, mb, l);
      add(ScheduleStep::kWait, StageKind::kDispatch, mb, l);
      add(ScheduleStep::kCompute, StageKind::kExperts, mb, l);
      add(ScheduleStep::kPost, StageKind::kCombine, mb, l);
      pending[mb] = l;
    }
  }
  finish(0);
  finish(1);
  return s;
}

OverlapExecutor::OverlapExecutor() : thread_([this] { Loop(); }) {}

OverlapExecutor::~OverlapExecutor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void OverlapExecutor::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_
    Task task = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    const auto start = std::chrono::steady_clock::now();
    absl::Status status = task.fn();
    const double seconds = SecondsSince(start);
    lock.lock();
    comm_seconds_ += seconds;
    results_[task.index] = std::move(status);
    done_[task.index] = true;
    cv_.notify_all();
  }
}

absl::Status OverlapExecutor::Run(const OverlapSchedule& schedule,
                                  const std::function<void(const Stage&)>& compute,
                                  const std::function<absl::Status(const Stage&)>& communicate,
                                  CommunicationTiming* timing) {
  using Key = std::tuple<int, int, int64_t>;
  auto key = [](const Stage& s) { return Key(static_cast<int>(s.kind), s.micro_batch, s.layer); };
  std::map<Key, size_t> posted;  // stage -> index in done_/results_
  size_t num_posted = 0;
  for (const ScheduleStep& step : schedule.steps) {
    if (step.action == ScheduleStep::kPost) posted[key(step.stage)] = num_posted++;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_.assign(num_posted, false);
    results_.assign(num_posted, absl::OkStatus());
    comm_seconds_ = 0;
  }
  double inline_seconds = 0, exposed_seconds = 0, compute_seconds = 0;
  absl::Status failure;
  size_t last_posted = 0;  // how many were posted before a failure stopped the run
  for (const ScheduleStep& step : schedule.steps) {
    if (!failure.ok()) break;
    switch (step.action) {
      case ScheduleStep::kCompute: {
        const auto start = std::chrono::steady_clock::now();
        compute(step.stage);
        compute_seconds += SecondsSince(start);
        break;
      }
      case ScheduleStep::kInline: {
        const auto start = std::chrono::steady_clock::now();
        failure = communicate(step.stage);
        inline_seconds += SecondsSince(start);
        break;
      }
      case ScheduleStep::kPost: {
        const Stage stage = step.stage;
        {
          std::lock_guard<std::mutex> lock(mu_);
          queue_.push_back(
              {[&communicate, stage] { return communicate(stage); }, posted.at(key(stage))});
        }
        ++last_posted;
        cv_.notify_all();
        break;
      }
      case ScheduleStep::kWait: {
        const size_t index = posted.at(key(step.stage));
        const auto start = std::chrono::steady_clock::now();
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return done_[index]; });
        exposed_seconds += SecondsSince(start);
        failure = results_[index];
        break;
      }
    }
  }
  // Whatever was posted still references the caller's buffers: wait for it.
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] {
    for (size_t i = 0; i < last_posted; ++i) {
      if (!done_[i]) return false;
    }
    return true;
  });
  for (size_t i = 0; i < last_posted && failure.ok(); ++i) failure = results_[i];
  if (timing != nullptr) {
    timing->all_to_all_seconds += comm_seconds_ + inline_seconds;
    timing->exposed_seconds += exposed_seconds + inline_seconds;
    timing->compute_seconds += compute_seconds;
  }
  return failure;
}

}  // namespace moeserve
