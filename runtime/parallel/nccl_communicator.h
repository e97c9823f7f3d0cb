// The NCCL backend of the communicator: GPU worker ranks exchanging tokens
// over NVLink / InfiniBand. Built only with the CUDA backend and NCCL
// (MOESERVE_HAVE_NCCL).
//
// Forming the group: rank 0 makes the ncclUniqueId and publishes it in the
// rendezvous store (the one the Gloo communicator uses: the coordinator's in
// a deployment, an in-process HashStore in tests) under
//   <prefix>/nccl/<generation>/unique_id
// so a group formed again never reads an earlier group's id; every rank
// marks itself under <prefix>/nccl/<generation>/joined/<rank>. Init is
// non-blocking (ncclConfig_t::blocking = 0) and polled until the timeout:
// then the communicator is aborted and Create returns DeadlineExceeded naming
// the ranks that never joined.
//
// Collectives:
//  - QueueAllToAllRows: one NCCL group of ncclSend / ncclRecv on the given
//    stream's cudaStream_t (a CUDA backend stream): each peer's counts and
//    its whole fixed-capacity chunk (groups * capacity rows), DeepEP
//    low-latency style, so nothing waits for the host. Rows past a count ARE
//    written in `recv` (with whatever the sender's rows past its counts
//    held): the ops never read them (kernels/ops.h). Counts are not checked
//    against the capacity here (MoeDispatchLayout never exceeds it). A host
//    function queued after the exchange fails the stream when the
//    communicator has been aborted. Capturable in a CUDA graph; a replayed
//    exchange is not watched by the watchdog.
//  - AllToAllCounts / AllToAllV (host spans) stage through device memory on
//    the communicator's own stream and block until done (for start-up and
//    tests, not for steps).
// Watchdog: a thread watches every eagerly queued exchange; one that has not
// completed `timeout` after it was queued aborts the communicator
// (ncclCommAbort makes the peers' and our kernels return), so a lost rank
// cannot hang the others. A failed or aborted communicator fails every later
// call (Unavailable, naming the first failure), as the Gloo one does; the
// group must be formed again.
//
// Threading: one thread issues collectives (the communication thread); the
// watchdog is internal. The device is set on every call.
#ifndef MOESERVE_RUNTIME_PARALLEL_NCCL_COMMUNICATOR_H_
#define MOESERVE_RUNTIME_PARALLEL_NCCL_COMMUNICATOR_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "gloo/rendezvous/store.h"
#include "runtime/parallel/communicator.h"

namespace moeserve {

struct NcclOptions {
  int rank = 0;
  int size = 1;
  int device = 0;  // this rank's CUDA device
  // Keys start with <prefix>/nccl/<generation>/: a new group generation (after
  // a lost rank) never sees the previous group's id.
  std::string prefix = "moeserve";
  int64_t generation = 0;
  // Forming the group, and each collective, fail after this long.
  std::chrono::milliseconds timeout{30000};
};

class NcclCommunicator final : public Communicator {
 public:
  // Blocks until all ranks joined or the timeout passed (DeadlineExceeded
  // naming the missing ranks); Unavailable when there is no CUDA device;
  // InvalidArgument for a rank outside [0, size).
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(
      const NcclOptions& options, std::shared_ptr<gloo::rendezvous::Store> store);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return options_.rank; }
  int size() const override { return options_.size; }
  std::string name() const override { return "nccl"; }

  absl::Status AllToAllCounts(std::span<const int64_t> send, std::span<int64_t> recv) override;
  absl::Status AllToAllV(std::span<const float> send, std::span<const int64_t> send_counts,
                         std::span<float> recv, std::span<const int64_t> recv_counts) override;
  void QueueAllToAllRows(Stream& stream, const RowExchange& exchange) override;

 private:
  struct State;
  NcclCommunicator(const NcclOptions& options, std::unique_ptr<State> state);

  const NcclOptions options_;
  std::unique_ptr<State> state_;  // the NCCL communicator, staging buffers, watchdog
};

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_PARALLEL_NCCL_COMMUNICATOR_H_
