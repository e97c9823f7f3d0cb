// Sequences waiting for admission, in scheduling order (priority, then
// arrival). A preempted sequence keeps its arrival, so it returns ahead of
// every request of its priority that arrived after it. Holds pointers it does
// not own. Not thread safe.
#ifndef MOESERVE_SCHEDULER_BATCHING_WAITING_QUEUE_H_
#define MOESERVE_SCHEDULER_BATCHING_WAITING_QUEUE_H_

#include <cstdint>
#include <set>

#include "scheduler/batching/sequence.h"

namespace moeserve::scheduler {

class WaitingQueue {
 public:
  void Push(Sequence* seq) { queue_.insert(seq); }
  // The sequence to admit next; nullptr when empty.
  Sequence* front() const { return queue_.empty() ? nullptr : *queue_.begin(); }
  void PopFront() { queue_.erase(queue_.begin()); }
  // Removes `seq`; false if it is not queued.
  bool Erase(Sequence* seq) { return queue_.erase(seq) > 0; }
  bool Contains(Sequence* seq) const { return queue_.contains(seq); }
  int64_t size() const { return static_cast<int64_t>(queue_.size()); }
  bool empty() const { return queue_.empty(); }
  auto begin() const { return queue_.begin(); }
  auto end() const { return queue_.end(); }

 private:
  std::set<Sequence*, SchedulesBeforeLess> queue_;
};

}  // namespace moeserve::scheduler

#endif  // MOESERVE_SCHEDULER_BATCHING_WAITING_QUEUE_H_
