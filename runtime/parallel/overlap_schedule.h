// The two-micro-batch overlap of shared/DESIGN.md as an explicit object: the
// stages of one forward pass, in the order the compute stream runs them, with
// the points where it hands an all-to-all to the communication stream and
// where it waits for one. With overlap on, micro-batch B computes while A's
// dispatch or combine is in flight, and the other way round:
//
//   compute: attn(A) | attn(B) | shared(A) experts(A) | shared(B) experts(B) | reduce(A) …
//   comm:       dispatch(A) dispatch(B)            combine(A)            combine(B)
//
// With overlap off, the same stages of the same micro-batches run one after
// another on one thread, so both modes compute exactly the same thing.
// Every rank builds the same schedule, so all ranks issue their collectives in
// the same order.
#ifndef MOESERVE_RUNTIME_PARALLEL_OVERLAP_SCHEDULE_H_
#define MOESERVE_RUNTIME_PARALLEL_OVERLAP_SCHEDULE_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"

namespace moeserve {

enum class StageKind {
  kAttention,  // residual stream of one layer up to the router: norm, attention,
               // norm, then the dense MLP (dense layer) or router and packing (MoE)
  kDispatch,   // all-to-all of the packed rows (communication)
  kShared,     // shared experts over the micro-batch's own tokens
  kExperts,    // local experts on the received rows
  kCombine,    // all-to-all of the expert outputs back (communication)
  kReduce,     // weighted sum of the expert outputs into the residual stream
};

bool IsCommunication(StageKind kind);
const char* StageName(StageKind kind);

struct Stage {
  StageKind kind;
  int micro_batch;  // 0 (A) or 1 (B)
  int64_t layer;
};

// What the compute thread does at one point of the schedule.
struct ScheduleStep {
  enum Action {
    kCompute,  // run a compute stage
    kPost,     // hand a communication stage to the communication thread
    kWait,     // wait until that communication stage has finished
    kInline,   // run a communication stage on the compute thread (overlap off)
  };
  Action action;
  Stage stage;
};

struct OverlapSchedule {
  std::vector<ScheduleStep> steps;
  // The communication stages in the order every rank issues them.
  std::vector<Stage> CommunicationOrder() const;
  std::string DebugString() const;
};

// moe_layers[l] says whether layer l has an MoE block (dense layers have no
// communication). micro_batches is 1 or 2; overlap needs 2.
OverlapSchedule BuildOverlapSchedule(const std::vector<bool>& moe_layers, int micro_batches,
                                     bool overlap);

// Time spent in all-to-all: what the collectives took, and the part of it
// the compute thread was blocked on (not hidden).
struct CommunicationTiming {
  double all_to_all_seconds = 0;
  double exposed_seconds = 0;
  // Time in the schedule's compute stages (the layers' work that the
  // all-to-all can hide behind; embedding and logits are outside).
  double compute_seconds = 0;
};

// Runs schedules: compute stages and waits on the calling thread, posted
// communication stages on a thread of its own, in posting order. Not thread
// safe: one Run at a time.
class OverlapExecutor {
 public:
  OverlapExecutor();
  ~OverlapExecutor();
  OverlapExecutor(const OverlapExecutor&) = delete;
  OverlapExecutor& operator=(const OverlapExecutor&) = delete;

  // Stops at the first failed communication stage: compute stages that need
  // it are not run, stages already posted are waited for, and the failure is
  // returned. Adds to *timing.
  absl::Status Run(const OverlapSchedule& schedule,
                   const std::function<void(const Stage&)>& compute,
                   const std::function<absl::Status(const Stage&)>& communicate,
                   CommunicationTiming* timing);

 private:
  struct Task {
    std::function<absl::Status()> fn;
    size_t index;  // position in this Run's posted stages
  };
  void Loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  std::vector<bool> done_;             // by posted index, this Run
  std::vector<absl::Status> results_;  // by posted index, this Run
  double comm_seconds_ = 0;            // this Run, on the communication thread
  bool stop_ = false;
  std::thread thread_;  // last: starts after the fields above
};

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_PARALLEL_OVERLAP_SCHEDULE_H_
