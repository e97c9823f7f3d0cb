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
// another on one stream, so both modes compute exactly the same thing.
//
// Rounds: when some rank has more tokens in a step than one exchange holds
// (ModelOptions::max_exchange_tokens), each MoE layer of each micro-batch
// exchanges its tokens in rounds of that many, one after another and without
// overlap (the buffers of one exchange are reused by the next round):
//   attn(A) dispatch(A) shared(A) experts(A) combine(A) reduce(A)
//   pack(A.1) dispatch(A.1) experts(A.1) combine(A.1) reduce(A.1) …
// Every rank builds the same schedule, so all ranks issue their collectives in
// the same order.
#ifndef MOESERVE_RUNTIME_PARALLEL_OVERLAP_SCHEDULE_H_
#define MOESERVE_RUNTIME_PARALLEL_OVERLAP_SCHEDULE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "kernels/stream.h"

namespace moeserve {

enum class StageKind {
  kAttention,  // residual stream of one layer up to the router: norm, attention,
               // norm, then the dense MLP (dense layer) or router and packing
               // of the first round (MoE)
  kPack,       // packing of a later round's rows for its dispatch (MoE, rounds > 1)
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
  // The exchange round of an MoE stage: rows [round * capacity, + capacity)
  // of the micro-batch. 0 for every stage when the step has one round; the
  // shared experts run once, in round 0.
  int64_t round = 0;
};

// What the compute stream does at one point of the schedule.
struct ScheduleStep {
  enum Action {
    kCompute,  // run a compute stage
    kPost,     // hand a communication stage to the communication stream
    kWait,     // wait until that communication stage has finished
    kInline,   // run a communication stage on the compute stream (overlap off)
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
// communication). micro_batches is 1 or 2; overlap needs 2 and one round
// (with more rounds the schedule runs without overlap).
OverlapSchedule BuildOverlapSchedule(const std::vector<bool>& moe_layers, int micro_batches,
                                     bool overlap, int64_t rounds = 1);

// Time spent in all-to-all: what the collectives took, and the part of it
// the compute stream was blocked on (not hidden).
struct CommunicationTiming {
  double all_to_all_seconds = 0;
  double exposed_seconds = 0;
  // Time in the schedule's compute stages (the layers' work that the
  // all-to-all can hide behind; embedding and logits are outside).
  double compute_seconds = 0;
};

// Queues schedules on two streams: compute stages on the compute stream, each
// posted communication stage on the communication stream after an event of
// the compute stream (the point where its input is ready), each wait as a
// wait of the compute stream on an event the communication stream recorded
// after the stage. An inline stage (overlap off) is queued on the compute
// stream. On the GPU these are CUDA streams and events; on the CPU, CPU
// streams (kernels/cpu/cpu_stream.h) with the same semantics, so a schedule
// that lacks a dependency fails the CPU tests too.
//
// A failed communication stage fails the communication stream; the compute
// stream takes the failure on at its next wait and skips the rest, so the
// pass ends without hanging and Synchronize() of the compute stream returns
// the failure. Not thread safe: one host thread queues a pass at a time.
class OverlapExecutor {
 public:
  // The streams and `backend` must outlive the executor; the events of
  // every post and wait point of `schedule` are created here, once.
  OverlapExecutor(Backend& backend, Stream& compute, Stream& comm, const OverlapSchedule& schedule);
  OverlapExecutor(const OverlapExecutor&) = delete;
  OverlapExecutor& operator=(const OverlapExecutor&) = delete;

  // Queues the schedule and returns; `compute(stage)` queues a compute
  // stage's ops on the compute stream, `communicate(stage, stream)` queues a
  // communication stage on `stream`.
  void Queue(const std::function<void(const Stage&)>& compute,
             const std::function<void(const Stage&, Stream&)>& communicate);

  Stream& compute_stream() { return compute_; }
  Stream& comm_stream() { return comm_; }

 private:
  Stream& compute_;
  Stream& comm_;
  const OverlapSchedule schedule_;
  // By posted stage, in schedule order: recorded on the compute stream
  // before the post, and on the communication stream after the stage.
  std::vector<std::unique_ptr<Event>> ready_, done_;
};

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_PARALLEL_OVERLAP_SCHEDULE_H_
