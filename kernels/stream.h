// The execution model every backend shares: work runs on streams, in the
// order it was queued; events mark points of a stream that other streams or
// the host wait for; copies between host and backend memory are queued like
// any other work; a stream's queued work can be captured once and replayed
// (CUDA graphs on the GPU).
//
// The CPU backend (kernels/cpu/cpu_stream.h) implements the same semantics
// for real: each stream is an ordered queue run by a thread of its own, an
// event is a real synchronisation point, and the host returns from a queueing
// call before the work has run. Code that forgets an event wait, reads a
// buffer before the stream has written it, or frees memory a stream still
// uses is wrong on the CPU too, so the CPU tests catch it.
//
// Memory rules, for every queueing call:
//  - Backend memory (buffers, views, spans of numbers handed to ops) is read
//    and written when the stream reaches the work, not when it is queued: it
//    must stay allocated and must not be changed by anything not ordered
//    before the work (by stream order or an event).
//  - Host memory handed to CopyToDevice / CopyToHost is read or written when
//    the stream reaches the copy: keep it alive and untouched until then
//    (Synchronize, or an event the host waited for).
//  - Descriptors (shapes, sampling parameters, sequence slices and their
//    block tables, rope tables) are consumed when the work is queued.
//
// Errors: work that fails (a collective whose peer is gone) makes its stream
// failed. Later work on a failed stream is skipped, events recorded on it
// still complete, and a stream that waits on an event of a failed stream
// becomes failed too. Synchronize returns the first failure. Nothing hangs
// because of a failure.
//
// Thread safety: a Stream is fed by one host thread at a time; Events may be
// recorded and waited on by different streams.
#ifndef MOESERVE_KERNELS_STREAM_H_
#define MOESERVE_KERNELS_STREAM_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace moeserve {

// Which device a backend drives: "cpu", "cuda:0".
enum class DeviceKind : uint8_t { kCpu, kCuda };
struct DeviceId {
  DeviceKind kind = DeviceKind::kCpu;
  int index = 0;  // CUDA device ordinal; 0 for the CPU
  std::string ToString() const;
  bool operator==(const DeviceId&) const = default;
};
// Parses "cpu", "cuda" (device 0) or "cuda:N". InvalidArgument naming the
// text and the accepted forms otherwise.
absl::StatusOr<DeviceId> ParseDeviceId(std::string_view text);

// A point in a stream's queue. Record it on one stream, wait for it on
// others or on the host. Recording again moves the point; a wait queued
// before that re-record still waits for the earlier point.
class Event {
 public:
  virtual ~Event() = default;
  // The host waits until the stream that recorded the event has reached it.
  // An event never recorded is complete.
  virtual absl::Status Synchronize() = 0;
};

// Busy and blocked time of a stream since its creation or the last
// ResetTimes(), as its own clock measures it. The CPU backend measures both;
// a backend that cannot (CUDA) reports zeros and says so in `measured`.
struct StreamTimes {
  double busy_seconds = 0;     // running work (ops, copies, collectives)
  double waiting_seconds = 0;  // blocked in waits on other streams' events
  bool measured = false;
};

class Graph;

class Stream {
 public:
  virtual ~Stream() = default;

  // Later work on this stream runs after the point `event` marks.
  virtual void Wait(Event& event) = 0;
  // Marks the current end of this stream's queue.
  virtual void Record(Event& event) = 0;
  // The host waits until everything queued so far has run; returns the
  // stream's first failure (sticky until the stream is destroyed).
  virtual absl::Status Synchronize() = 0;

  // Asynchronous copies; see the memory rules above.
  virtual void CopyToDevice(void* device_dst, const void* host_src, size_t bytes) = 0;
  virtual void CopyToHost(void* host_dst, const void* device_src, size_t bytes) = 0;
  virtual void CopyOnDevice(void* device_dst, const void* device_src, size_t bytes) = 0;
  virtual void Fill(void* device_dst, uint8_t byte, size_t bytes) = 0;

  // Runs `fn` on a host thread when the stream reaches this point, blocking
  // the stream until it returns (cudaLaunchHostFunc). A failed status fails
  // the stream. For the CPU backend's kernels and host-staged collectives.
  virtual void HostFunction(std::function<absl::Status()> fn) = 0;

  // Capture: from BeginCapture until EndCapture, work queued on this stream
  // is recorded instead of run. The graph replays that work, with the same
  // buffers and descriptors, each time it is launched on a stream: inputs
  // that change between replays must live in the captured buffers.
  // Waits and records of other streams' events may not be captured.
  virtual absl::Status BeginCapture() = 0;
  virtual absl::StatusOr<std::unique_ptr<Graph>> EndCapture() = 0;

  virtual StreamTimes times() const = 0;
  virtual void ResetTimes() = 0;
};

class Graph {
 public:
  virtual ~Graph() = default;
  // Queues the captured work on `stream` (of the same backend).
  virtual absl::Status Launch(Stream& stream) = 0;
  // Operations captured, for tests and logs.
  virtual size_t size() const = 0;
};

}  // namespace moeserve

#endif  // MOESERVE_KERNELS_STREAM_H_
