// The CPU backend's streams and events: the execution model of
// kernels/stream.h, for real. Each stream is an ordered queue of host
// functions run by a thread of its own; the host thread that queues work
// returns at once; an event wait blocks the waiting stream's thread until the
// recording stream's thread has passed the event's point.
#ifndef MOESERVE_KERNELS_CPU_CPU_STREAM_H_
#define MOESERVE_KERNELS_CPU_CPU_STREAM_H_

#include <chrono>
#include <memory>

#include "kernels/stream.h"

namespace moeserve::cpu {

struct CpuStreamOptions {
  // Each piece of work waits this long before it runs. For tests: work queued
  // without the waits it needs then reads what another stream has not yet
  // written, every time rather than by bad luck.
  std::chrono::microseconds delay_per_item{0};
};

std::unique_ptr<Stream> CreateCpuStream(const CpuStreamOptions& options = {});
std::unique_ptr<Event> CreateCpuEvent();

}  // namespace moeserve::cpu

#endif  // MOESERVE_KERNELS_CPU_CPU_STREAM_H_
