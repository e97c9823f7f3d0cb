// The Gloo backend of the communicator: CPU worker processes exchanging
// tokens over TCP. The group forms through a rendezvous store every rank can
// reach (the coordinator's, a shared directory, or an in-process one in tests).
#ifndef MOESERVE_RUNTIME_PARALLEL_GLOO_COMMUNICATOR_H_
#define MOESERVE_RUNTIME_PARALLEL_GLOO_COMMUNICATOR_H_

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "gloo/rendezvous/store.h"
#include "runtime/parallel/communicator.h"

namespace moeserve {

struct GlooOptions {
  int rank = 0;
  int size = 1;
  // Address the other ranks reach this one at (its pod IP on Kubernetes).
  std::string host = "127.0.0.1";
  // Keys of this group in the store start with it, so a group formed again
  // (after a lost rank) never reads the previous group's addresses.
  std::string prefix = "moeserve";
  // Forming the group and every collective fail after this long; a rank that
  // died then cannot hang the others.
  std::chrono::milliseconds timeout{30000};
};

// Not thread safe: one thread (the communication thread) issues collectives.
class GlooCommunicator final : public Communicator {
 public:
  // Connects to every other rank through `store`; blocks until all ranks have
  // joined or the timeout passes (DeadlineExceeded / Unavailable with what was
  // missing).
  static absl::StatusOr<std::unique_ptr<GlooCommunicator>> Create(
      const GlooOptions& options, std::shared_ptr<gloo::rendezvous::Store> store);
  ~GlooCommunicator() override;

  int rank() const override { return options_.rank; }
  int size() const override { return options_.size; }
  std::string name() const override { return "gloo"; }
  absl::Status AllToAllCounts(std::span<const int64_t> send, std::span<int64_t> recv) override;
  absl::Status AllToAllV(std::span<const float> send, std::span<const int64_t> send_counts,
                         std::span<float> recv, std::span<const int64_t> recv_counts) override;

 private:
  struct State;
  GlooCommunicator(const GlooOptions& options, std::unique_ptr<State> state);
  absl::Status Failed(const char* what, const std::exception& e);

  const GlooOptions options_;
  std::unique_ptr<State> state_;
  std::string broken_;  // set by the first failed collective
};

}  // namespace moeserve

#endif  // MOESERVE_RUNTIME_PARALLEL_GLOO_COMMUNICATOR_H_
