#include "scheduler/placement/expert_load_window.h"

namespace moeserve::scheduler {

void ExpertLoadWindow::Add(const std::map<int32_t, std::vector<int64_t>>& step) {
  std::map<int32_t, std::vector<int64_t>> kept;
  for (const auto& [layer, counts] : step) {
    if (static_cast<int32_t>(counts.size()) != experts_) continue;
    kept[layer] = counts;
    auto& total = totals_[layer];
    total.resize(static_cast<size_t>(experts_), 0);
    for (size_t e = 0; e < counts.size(); ++e) total[e] += counts[e];
  }
  window_.push_back(std::move(kept));
  while (static_cast<int64_t>(window_.size()) > steps_) {
    for (const auto& [layer, counts] : window_.front()) {
      auto& total = totals_[layer];
      for (size_t e = 0; e < counts.size(); ++e) total[e] -= counts[e];
    }
    window_.pop_front();
  }
}

LoadTrace ExpertLoadWindow::Totals() const {
  LoadTrace t;
  t.experts = experts_;
  for (const auto& [layer, total] : totals_) {
    t.layers[layer] = std::vector<double>(total.begin(), total.end());
  }
  return t;
}

int32_t PickRank(const std::vector<RankLoad>& ranks) {
  int32_t best = 0;
  auto headroom = [](const RankLoad& r) { return r.free_blocks - r.blocks_wanted_by_waiting; };
  for (size_t i = 1; i < ranks.size(); ++i) {
    const RankLoad& a = ranks[i];
    const RankLoad& b = ranks[static_cast<size_t>(best)];
    if (headroom(a) != headroom(b)) {
      if (headroom(a) > headroom(b)) best = static_cast<int32_t>(i);
    } else if (a.running + a.waiting < b.running + b.waiting) {
      best = static_cast<int32_t>(i);
    }
  }
  return best;
}

}  // namespace moeserve::scheduler
