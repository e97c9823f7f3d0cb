// A sliding window of the tokens each logical expert received, per MoE layer,
// over the last `steps` steps (summed over ranks): what placement decisions
// and the balancedness metric go by. Not thread safe (the engine thread owns it).
#ifndef MOESERVE_SCHEDULER_PLACEMENT_EXPERT_LOAD_WINDOW_H_
#define MOESERVE_SCHEDULER_PLACEMENT_EXPERT_LOAD_WINDOW_H_

#include <cstdint>
#include <deque>
#include <map>
#include <vector>

#include "scheduler/placement/expert_placement.h"

namespace moeserve::scheduler {

class ExpertLoadWindow {
 public:
  ExpertLoadWindow(int32_t experts, int64_t steps) : experts_(experts), steps_(steps) {}

  // One step's counts: layer -> tokens per expert, already summed over ranks.
  // Counts of the wrong length are ignored (a peer's bug is not the window's).
  void Add(const std::map<int32_t, std::vector<int64_t>>& step);

  // The window's totals as a trace (layers seen at least once).
  LoadTrace Totals() const;
  int64_t steps_in_window() const { return static_cast<int64_t>(window_.size()); }

 private:
  const int32_t experts_;
  const int64_t steps_;
  std::deque<std::map<int32_t, std::vector<int64_t>>> window_;
  std::map<int32_t, std::vector<int64_t>> totals_;
};

// Where a new sequence goes: the rank with the most free KV blocks once its
// waiting sequences are served, then the fewest running and waiting
// sequences, then the lowest rank.
struct RankLoad {
  int64_t free_blocks = 0;
  int64_t blocks_wanted_by_waiting = 0;
  int64_t running = 0;
  int64_t waiting = 0;
};
int32_t PickRank(const std::vector<RankLoad>& ranks);

}  // namespace moeserve::scheduler

#endif  // MOESERVE_SCHEDULER_PLACEMENT_EXPERT_LOAD_WINDOW_H_
