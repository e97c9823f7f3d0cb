#include "runtime/parallel/gloo_communicator.h"

#include <csignal>
#include <exception>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gloo/alltoall.h"
#include "gloo/alltoallv.h"
#include "gloo/rendezvous/context.h"
#include "gloo/rendezvous/prefix_store.h"
#include "gloo/transport/tcp/device.h"

namespace moeserve {

struct GlooCommunicator::State {
  std::shared_ptr<gloo::rendezvous::Store> store;
  std::shared_ptr<gloo::transport::Device> device;
  std::shared_ptr<gloo::rendezvous::Context> context;
};

absl::StatusOr<std::unique_ptr<GlooCommunicator>> GlooCommunicator::Create(
    const GlooOptions& options, std::shared_ptr<gloo::rendezvous::Store> store) {
  if (options.size < 1 || options.rank < 0 || options.rank >= options.size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank, " of a group of ", options.size));
  }
  if (options.timeout <= std::chrono::milliseconds::zero()) {
    return absl::InvalidArgumentError("the communicator timeout must be positive");
  }
  // Gloo writes to its peers' sockets without MSG_NOSIGNAL: when a peer is
  // gone, a write raises SIGPIPE, whose default action kills this whole
  // process without a word (a surviving rank of a group that lost one; a
  // test of exactly that). Ignored, the write fails with EPIPE and the
  // collective fails with an error, as the communicator promises.
  static std::once_flag ignore_sigpipe;
  std::call_once(ignore_sigpipe, [] { std::signal(SIGPIPE, SIG_IGN); });
  auto state = std::make_unique<State>();
  state->store = std::move(store);
  try {
    gloo::transport::tcp::attr attr(options.host.c_str());
    state->device = gloo::transport::tcp::CreateDevice(attr);
    state->context = std::make_shared<gloo::rendezvous::Context>(options.rank, options.size);
    state->context->setTimeout(options.timeout);
    gloo::rendezvous::PrefixStore prefixed(options.prefix, *state->store);
    state->context->connectFullMesh(prefixed, state->device);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat(
        "rank ", options.rank, " of ", options.size, " could not form the Gloo group at ",
        options.host, " (prefix ", options.prefix, ") within ",
        std::chrono::duration<double>(options.timeout).count(), " s: ", e.what()));
  }
  return std::unique_ptr<GlooCommunicator>(new GlooCommunicator(options, std::move(state)));
}

GlooCommunicator::GlooCommunicator(const GlooOptions& options, std::unique_ptr<State> state)
    : options_(options), state_(std::move(state)) {}

GlooCommunicator::~GlooCommunicator() = default;

absl::Status GlooCommunicator::Failed(const char* what, const std::exception& e) {
  broken_ =
      absl::StrCat("Gloo ", what, " on rank ", options_.rank, " of ", options_.size,
                   " failed (a peer was lost or timed out after ",
                   std::chrono::duration<double>(options_.timeout).count(), " s): ", e.what());
  return absl::UnavailableError(broken_);
}

absl::Status GlooCommunicator::AllToAllCounts(std::span<const int64_t> send,
                                              std::span<int64_t> recv) {
  if (!broken_.empty()) return absl::UnavailableError(broken_);
  const auto n = static_cast<size_t>(options_.size);
  if (send.size() != n || recv.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("count exchange among ", n, " ranks got ",
                                                   send.size(), " and ", recv.size(), " counts"));
  }
  try {
    gloo::AlltoallOptions opts(state_->context);
    opts.setInput(const_cast<int64_t*>(send.data()), n);
    opts.setOutput(recv.data(), n);
    gloo::alltoall(opts);
  } catch (const std::exception& e) {
    return Failed("count exchange", e);
  }
  return absl::OkStatus();
}

absl::Status GlooCommunicator::AllToAllV(std::span<const float> send,
                                         std::span<const int64_t> send_counts,
                                         std::span<float> recv,
                                         std::span<const int64_t> recv_counts) {
  if (!broken_.empty()) return absl::UnavailableError(broken_);
  const auto n = static_cast<size_t>(options_.size);
  if (send_counts.size() != n || recv_counts.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("all-to-all among ", n, " ranks got ",
                                                   send_counts.size(), " send and ",
                                                   recv_counts.size(), " receive counts"));
  }
  int64_t total_send = 0, total_recv = 0;
  for (size_t p = 0; p < n; ++p) {
    total_send += send_counts[p];
    total_recv += recv_counts[p];
  }
  if (total_send > static_cast<int64_t>(send.size()) ||
      total_recv > static_cast<int64_t>(recv.size())) {
    return absl::InvalidArgumentError(absl::StrCat("all-to-all sends ", total_send, " values from ",
                                                   send.size(), " and receives ", total_recv,
                                                   " into ", recv.size()));
  }
  // Gloo wants valid pointers even for empty buffers.
  float empty_send = 0, empty_recv = 0;
  try {
    gloo::AlltoallvOptions opts(state_->context);
    opts.setInput(total_send > 0 ? const_cast<float*>(send.data()) : &empty_send,
                  std::vector<int64_t>(send_counts.begin(), send_counts.end()));
    opts.setOutput(total_recv > 0 ? recv.data() : &empty_recv,
                   std::vector<int64_t>(recv_counts.begin(), recv_counts.end()));
    gloo::alltoallv(opts);
  } catch (const std::exception& e) {
    return Failed("all-to-all", e);
  }
  return absl::OkStatus();
}

}  // namespace moeserve
