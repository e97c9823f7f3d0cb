// The communicator seam between the ranks of an expert-parallel group: the two
// collectives the MoE dispatch and combine need. Backends: LocalCommunicator
// (one process), GlooCommunicator (CPU processes), NCCL on GPUs; a
// link-emulating wrapper lets benchmarks set the comm:compute ratio of
// NVLink or InfiniBand on any machine.
//
// Collectives must be called by every rank of the group in the same order
// (the overlap schedule guarantees it); a rank with no tokens still calls them
// with zero counts. A failed collective leaves the communicator unusable:
// every later call fails too, and the group must be formed again.
#ifndef MOESERVE_RUNTIME_PARALLEL_COMMUNICATOR_H_
#define MOESERVE_RUNTIME_PARALLEL_COMMUNICATOR_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/stream.h"

namespace moeserve {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // For logs and errors: "local", "gloo", "nccl", plus decorations.
  virtual std::string name() const = 0;

  // Every rank r sends send[p] to rank p and receives into recv[p] what rank
  // p sent it. Both spans hold size() values.
  virtual absl::Status AllToAllCounts(std::span<const int64_t> send, std::span<int64_t> recv) = 0;

  // Every rank sends the next send_counts[p] floats of `send` to rank p, in
  // rank order, and receives recv_counts[p] floats from rank p into `recv`,
  // in rank order. recv_counts[p] must equal what rank p sends here (exchange
  // the counts with AllToAllCounts first).
  virtual absl::Status AllToAllV(std::span<const float> send, std::span<const int64_t> send_counts,
                                 std::span<float> recv, std::span<const int64_t> recv_counts) = 0;

  // The MoE dispatch and combine on backend buffers, queued on a stream.
  // `send` holds size() chunks, chunk p for rank p, each of `groups` groups
  // of `capacity` rows of `width` floats; group g of chunk p holds
  // send_counts[p * groups + g] rows. Rank p's chunk for this rank lands in
  // chunk p of `recv`, its counts in recv_counts[p * groups ...]. Rows past a
  // count carry nothing: an implementation may leave them or overwrite them
  // (whole-chunk transfers do), and no reader looks at them. Every array is
  // backend memory, read
  // and written when the stream reaches the exchange; a failure (a lost peer,
  // a count above the capacity) fails the stream.
  struct RowExchange {
    const float* send = nullptr;
    const int32_t* send_counts = nullptr;
    float* recv = nullptr;
    int32_t* recv_counts = nullptr;
    int64_t groups = 0;
    int64_t capacity = 0;
    int64_t width = 0;
    // False when the buffers are GPU memory the host cannot read.
    bool host_accessible = true;
  };
  // The default stages through host memory: it exchanges the counts, then
  // only the rows in use, with AllToAllCounts and AllToAllV, in a host
  // function of the stream. Host-accessible buffers (the CPU backend) are read
  // in place; device buffers are first copied whole to host staging on the
  // stream and the received ones copied back (several GPU ranks sharing a
  // GPU through Gloo, for tests; slow). A device communicator (NCCL)
  // overrides it.
  virtual void QueueAllToAllRows(Stream& stream, const RowExchange& exchange);

  // Seconds spent in QueueAllToAllRows' exchanges so far, as measured where
  // they ran (0 for an implementation that cannot measure them).
  virtual double exchange_seconds() const { return exchange_ns_.load() * 1e-9; }

 protected:
  void AddExchangeTime(int64_t ns) { exchange_ns_.fetch_add(ns); }

 private:
  absl::Status ExchangeRowsOnHost(const RowExchange& exchange);
  void QueueStagedAllToAllRows(Stream& stream, const RowExchange& exchange);

  std::atomic<int64_t> exchange_ns_{0};
  // Host staging of the default exchange, reused: grown, never shrunk.
  std::vector<float> send_staging_, recv_staging_;
};

// The group of one: both collectives are copies.
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "local"; }
  absl::Status AllToAllCounts(std::span<const int64_t> send, std::span<int64_t> recv) override;
  absl::Status AllToAllV(std::span<const float> send, std::span<const int64_t> send_counts,
                         std::span<float> recv, std::span<const int64_t> recv_counts) override;
};

// Forwards to a communicator that can be replaced between steps, so a model
// loaded once keeps serving when its group is formed again (after a lost
// rank) with the same rank and size. Replace and the collectives must not
// run at the same time.
class ReplaceableCommunicator final : public Communicator {
 public:
  ReplaceableCommunicator(int rank, int size) : rank_(rank), size_(size) {}
  // `next` must have this rank and size.
  absl::Status Replace(std::unique_ptr<Communicator> next);
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override;
  absl::Status AllToAllCounts(std::span<const int64_t> send, std::span<int64_t> recv) override;
  absl::Status AllToAllV(std::span<const float> send, std::span<const int64_t> send_counts,
                         std::span<float> recv, std::span<const int64_t> recv_counts) override;
  // Forwards to the communicator in place when the exchange is queued.
  void QueueAllToAllRows(Stream& stream, const RowExchange& exchange) override;
  double exchange_seconds() const override;

 private:
  const int rank_;
  const int size_;
  std::unique_ptr<Communicator> inner_;  // null until the first Replace
};

// A link with a fixed latency and bandwidth, in place of the real one when
// benchmarking: each AllToAllV takes at least
//   latency + (the larger of the bytes this rank sends to and receives from
//   other ranks) / bandwidth,
// sleeping for the rest after the inner collective. AllToAllCounts adds the
// latency only. Thread safe as the inner communicator is.
struct EmulatedLink {
  double latency_us = 0;      // per collective
  double bandwidth_gbps = 0;  // gigabytes per second per rank; 0 means unlimited
  bool enabled() const { return latency_us > 0 || bandwidth_gbps > 0; }
};
std::unique_ptr<Communicator> WithEmulatedLink(std::unique_ptr<Communicator> inner,
                                               const EmulatedLink& link);

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_PARALLEL_COMMUNICATOR_H_
