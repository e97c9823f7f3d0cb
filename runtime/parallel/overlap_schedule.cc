#include "runtime/parallel/overlap_schedule.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "absl/strings/str_cat.h"

namespace moeserve {

bool IsCommunication(StageKind kind) {
  return kind == StageKind::kDispatch || kind == StageKind::kCombine;
}

const char* StageName(StageKind kind) {
  switch (kind) {
    case StageKind::kAttention:
      return "attention";
    case StageKind::kPack:
      return "pack";
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
                    s.stage.micro_batch == 0 ? "A" : "B", s.stage.layer,
                    s.stage.round > 0 ? absl::StrCat(".", s.stage.round) : "", ")");
  }
  return out;
}

OverlapSchedule BuildOverlapSchedule(const std::vector<bool>& moe_layers, int micro_batches,
                                     bool overlap, int64_t rounds) {
  const int mbs = micro_batches >= 2 ? 2 : 1;
  rounds = std::max<int64_t>(rounds, 1);
  overlap = overlap && mbs == 2 && rounds == 1;
  OverlapSchedule s;
  auto add = [&](ScheduleStep::Action a, StageKind k, int mb, int64_t l, int64_t round = 0) {
    s.steps.push_back({a, {k, mb, l, round}});
  };
  const auto layers = static_cast<int64_t>(moe_layers.size());
  if (!overlap) {
    // One micro-batch after the other, each through a whole layer at a time,
    // and each MoE block one exchange round after the other.
    for (int64_t l = 0; l < layers; ++l) {
      for (int mb = 0; mb < mbs; ++mb) {
        add(ScheduleStep::kCompute, StageKind::kAttention, mb, l);
        if (!moe_layers[static_cast<size_t>(l)]) continue;
        for (int64_t r = 0; r < rounds; ++r) {
          if (r > 0) add(ScheduleStep::kCompute, StageKind::kPack, mb, l, r);
          add(ScheduleStep::kInline, StageKind::kDispatch, mb, l, r);
          if (r == 0) add(ScheduleStep::kCompute, StageKind::kShared, mb, l);
          add(ScheduleStep::kCompute, StageKind::kExperts, mb, l, r);
          add(ScheduleStep::kInline, StageKind::kCombine, mb, l, r);
          add(ScheduleStep::kCompute, StageKind::kReduce, mb, l, r);
        }
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

OverlapExecutor::OverlapExecutor(Backend& backend, Stream& compute, Stream& comm,
                                 const OverlapSchedule& schedule)
    : compute_(compute), comm_(comm), schedule_(schedule) {
  for (const ScheduleStep& step : schedule_.steps) {
    if (step.action != ScheduleStep::kPost) continue;
    ready_.push_back(backend.CreateEvent());
    done_.push_back(backend.CreateEvent());
  }
}

void OverlapExecutor::Queue(const std::function<void(const Stage&)>& compute,
                            const std::function<void(const Stage&, Stream&)>& communicate) {
  using Key = std::tuple<int, int, int64_t, int64_t>;
  auto key = [](const Stage& s) {
    return Key(static_cast<int>(s.kind), s.micro_batch, s.layer, s.round);
  };
  std::map<Key, size_t> posted;  // stage -> its events
  for (const ScheduleStep& step : schedule_.steps) {
    switch (step.action) {
      case ScheduleStep::kCompute:
        compute(step.stage);
        break;
      case ScheduleStep::kInline:
        communicate(step.stage, compute_);
        break;
      case ScheduleStep::kPost: {
        const size_t i = posted.size();
        posted[key(step.stage)] = i;
        compute_.Record(*ready_[i]);
        comm_.Wait(*ready_[i]);
        communicate(step.stage, comm_);
        comm_.Record(*done_[i]);
        break;
      }
      case ScheduleStep::kWait:
        compute_.Wait(*done_[posted.at(key(step.stage))]);
        break;
    }
  }
}

}  // namespace moeserve
