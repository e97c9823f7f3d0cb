#include "kernels/cpu/cpu_stream.h"

#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace moeserve::cpu {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// What events need of a stream, kept alive by the events that point at it.
struct Progress {
  std::mutex mu;
  std::condition_variable cv;
  // Targets the waiters wait for: the stream thread wakes them only when the
  // smallest is reached, not after every item (on two cores, waking the host
  // after every op costs more than the op).
  std::multiset<uint64_t> targets;

  // Blocks until `completed` reaches `target`. `lock` holds `mu`.
  void WaitFor(std::unique_lock<std::mutex>& lock, uint64_t target) {
    if (completed >= target) return;
    const auto it = targets.insert(target);
    cv.wait(lock, [&] { return completed >= target; });
    targets.erase(it);
  }
  uint64_t completed = 0;  // items run (or skipped) so far
  uint64_t failed_at = 0;  // 1-based index of the first failed item; 0: none
  absl::Status failure;    // that item's status
};

// A point of one stream: complete when progress->completed >= target.
struct Point {
  std::shared_ptr<Progress> progress;
  uint64_t target = 0;
};

class CpuEvent final : public Event {
 public:
  absl::Status Synchronize() override {
    const Point p = point_;
    if (p.progress == nullptr) return absl::OkStatus();
    std::unique_lock<std::mutex> lock(p.progress->mu);
    p.progress->WaitFor(lock, p.target);
    if (p.progress->failed_at != 0 && p.progress->failed_at <= p.target) {
      return p.progress->failure;
    }
    return absl::OkStatus();
  }
  Point point_;  // set by CpuStream::Record
};

// Work items: a function, or a wait on another stream's point.
struct Item {
  std::function<absl::Status()> fn;  // null for a wait
  Point wait;
};

class CpuGraph final : public Graph {
 public:
  explicit CpuGraph(std::vector<std::function<absl::Status()>> items) : items_(std::move(items)) {}
  absl::Status Launch(Stream& stream) override;
  size_t size() const override { return items_.size(); }

 private:
  std::vector<std::function<absl::Status()>> items_;
};

class CpuStream final : public Stream {
 public:
  explicit CpuStream(const CpuStreamOptions& options)
      : options_(options), progress_(std::make_shared<Progress>()), thread_([this] { Loop(); }) {}

  ~CpuStream() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  void Wait(Event& event) override {
    const Point point = static_cast<CpuEvent&>(event).point_;
    if (capturing_) {
      capture_error_ = absl::FailedPreconditionError(
          "an event wait was queued on a stream while it was being captured");
      return;
    }
    if (point.progress == nullptr) return;  // never recorded: complete
    Push(Item{nullptr, point});
  }

  void Record(Event& event) override {
    if (capturing_) {
      capture_error_ = absl::FailedPreconditionError(
          "an event was recorded on a stream while it was being captured");
      return;
    }
    static_cast<CpuEvent&>(event).point_ = Point{progress_, enqueued_};
  }

  absl::Status Synchronize() override {
    if (capturing_) {
      return absl::FailedPreconditionError("Synchronize on a stream that is being captured");
    }
    const uint64_t target = enqueued_;
    std::unique_lock<std::mutex> lock(progress_->mu);
    progress_->WaitFor(lock, target);
    return progress_->failure;
  }

  void CopyToDevice(void* dst, const void* src, size_t bytes) override {
    HostFunction([dst, src, bytes] {
      if (bytes > 0) std::memcpy(dst, src, bytes);
      return absl::OkStatus();
    });
  }
  void CopyToHost(void* dst, const void* src, size_t bytes) override {
    CopyToDevice(dst, src, bytes);
  }
  void CopyOnDevice(void* dst, const void* src, size_t bytes) override {
    CopyToDevice(dst, src, bytes);
  }
  void Fill(void* dst, uint8_t byte, size_t bytes) override {
    HostFunction([dst, byte, bytes] {
      if (bytes > 0) std::memset(dst, byte, bytes);
      return absl::OkStatus();
    });
  }

  void HostFunction(std::function<absl::Status()> fn) override {
    if (capturing_) {
      captured_.push_back(std::move(fn));
      return;
    }
    Push(Item{std::move(fn), {}});
  }

  absl::Status BeginCapture() override {
    if (capturing_) return absl::FailedPreconditionError("the stream is already being captured");
    capturing_ = true;
    captured_.clear();
    capture_error_ = absl::OkStatus();
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Graph>> EndCapture() override {
    if (!capturing_) return absl::FailedPreconditionError("the stream is not being captured");
    capturing_ = false;
    if (!capture_error_.ok()) return capture_error_;
    return std::unique_ptr<Graph>(new CpuGraph(std::move(captured_)));
  }

  StreamTimes times() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return {busy_seconds_, waiting_seconds_, true};
  }
  void ResetTimes() override {
    std::lock_guard<std::mutex> lock(mu_);
    busy_seconds_ = 0;
    waiting_seconds_ = 0;
  }

 private:
  void Push(Item item) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(item));
    }
    ++enqueued_;
    cv_.notify_one();
  }

  void Loop() {
    for (;;) {
      Item item;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and everything queued has run
        item = std::move(queue_.front());
        queue_.pop_front();
      }
      if (options_.delay_per_item.count() > 0) std::this_thread::sleep_for(options_.delay_per_item);
      absl::Status status;
      const auto start = std::chrono::steady_clock::now();
      const bool failed = [&] {
        std::lock_guard<std::mutex> lock(progress_->mu);
        return progress_->failed_at != 0;
      }();
      if (item.fn == nullptr) {
        // A wait: block until the other stream passes the point, and take on
        // its failure if it failed before it.
        Progress& other = *item.wait.progress;
        std::unique_lock<std::mutex> lock(other.mu);
        other.WaitFor(lock, item.wait.target);
        if (other.failed_at != 0 && other.failed_at <= item.wait.target) status = other.failure;
      } else if (!failed) {
        status = item.fn();
      }
      const double seconds = SecondsSince(start);
      {
        std::lock_guard<std::mutex> lock(mu_);
        (item.fn == nullptr ? waiting_seconds_ : busy_seconds_) += seconds;
      }
      bool wake = false;
      {
        std::lock_guard<std::mutex> lock(progress_->mu);
        ++progress_->completed;
        if (!status.ok() && progress_->failed_at == 0) {
          progress_->failed_at = progress_->completed;
          progress_->failure = std::move(status);
        }
        wake = !progress_->targets.empty() && *progress_->targets.begin() <= progress_->completed;
      }
      if (wake) progress_->cv.notify_all();
    }
  }

  const CpuStreamOptions options_;
  std::shared_ptr<Progress> progress_;
  // Host side: touched only by the thread that feeds the stream.
  uint64_t enqueued_ = 0;  // items pushed so far
  bool capturing_ = false;
  std::vector<std::function<absl::Status()>> captured_;
  absl::Status capture_error_;

  mutable std::mutex mu_;  // guards the fields below
  std::condition_variable cv_;
  std::deque<Item> queue_;
  double busy_seconds_ = 0;
  double waiting_seconds_ = 0;
  bool stop_ = false;
  std::thread thread_;  // last: starts after the fields above
};

absl::Status CpuGraph::Launch(Stream& stream) {
  for (const auto& fn : items_) stream.HostFunction(fn);
  return absl::OkStatus();
}

}  // namespace

std::unique_ptr<Stream> CreateCpuStream(const CpuStreamOptions& options) {
  return std::make_unique<CpuStream>(options);
}

std::unique_ptr<Event> CreateCpuEvent() { return std::make_unique<CpuEvent>(); }

}  // namespace moeserve::cpu
