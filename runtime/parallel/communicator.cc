#include "runtime/parallel/communicator.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

namespace moeserve {
namespace {

absl::Status CheckSpans(const Communicator& c, size_t send_counts, size_t recv_counts) {
  if (send_counts != static_cast<size_t>(c.size()) ||
      recv_counts != static_cast<size_t>(c.size())) {
    return absl::InvalidArgumentError(absl::StrCat("all-to-all on ", c.name(), " of ", c.size(),
                                                   " ranks got ", send_counts, " send and ",
                                                   recv_counts, " receive counts"));
  }
  return absl::OkStatus();
}

class EmulatedLinkCommunicator final : public Communicator {
 public:
  EmulatedLinkCommunicator(std::unique_ptr<Communicator> inner, const EmulatedLink& link)
      : inner_(std::move(inner)), link_(link) {}

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string name() const override {
    return absl::StrCat(inner_->name(), " with an emulated link (", link_.latency_us, " us, ",
                        link_.bandwidth_gbps, " GB/s)");
  }

  absl::Status AllToAllCounts(std::span<const int64_t> send, std::span<int64_t> recv) override {
    const auto start = std::chrono::steady_clock::now();
    absl::Status s = inner_->AllToAllCounts(send, recv);
    SleepUntil(start, link_.latency_us);
    return s;
  }

  absl::Status AllToAllV(std::span<const float> send, std::span<const int64_t> send_counts,
                         std::span<float> recv, std::span<const int64_t> recv_counts) override {
    const auto start = std::chrono::steady_clock::now();
    absl::Status s = inner_->AllToAllV(send, send_counts, recv, recv_counts);
    int64_t sent = 0, received = 0;
    for (int p = 0; p < size() && p < static_cast<int>(send_counts.size()); ++p) {
      if (p == rank()) continue;
      sent += send_counts[static_cast<size_t>(p)];
      received += recv_counts[static_cast<size_t>(p)];
    }
    const double bytes = static_cast<double>(std::max(sent, received)) * sizeof(float);
    const double transfer_us =
        link_.bandwidth_gbps > 0 ? bytes / (link_.bandwidth_gbps * 1e9) * 1e6 : 0.0;
    SleepUntil(start, link_.latency_us + transfer_us);
    return s;
  }

 private:
  static void SleepUntil(std::chrono::steady_clock::time_point start, double us) {
    std::this_thread::sleep_until(start + std::chrono::nanoseconds(static_cast<int64_t>(us * 1e3)));
  }

  std::unique_ptr<Communicator> inner_;
  const EmulatedLink link_;
};

}  // namespace

void Communicator::QueueAllToAllRows(Stream& stream, const RowExchange& exchange) {
  if (!exchange.host_accessible) {
    QueueStagedAllToAllRows(stream, exchange);
    return;
  }
  stream.HostFunction([this, exchange] {
    const auto start = std::chrono::steady_clock::now();
    absl::Status s = ExchangeRowsOnHost(exchange);
    AddExchangeTime(std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count());
    return s;
  });
}

void Communicator::QueueStagedAllToAllRows(Stream& stream, const RowExchange& exchange) {
  // Host copies of the whole buffers, alive until the last piece of work
  // that uses them has run (they are captured by it).
  struct Staging {
    std::vector<float> send, recv;
    std::vector<int32_t> send_counts, recv_counts;
  };
  const auto groups = static_cast<size_t>(size()) * static_cast<size_t>(exchange.groups);
  const size_t floats = groups * static_cast<size_t>(exchange.capacity * exchange.width);
  auto staging = std::make_shared<Staging>();
  staging->send.resize(floats);
  staging->recv.resize(floats);
  staging->send_counts.resize(groups);
  staging->recv_counts.resize(groups);
  stream.CopyToHost(staging->send.data(), exchange.send, floats * sizeof(float));
  stream.CopyToHost(staging->send_counts.data(), exchange.send_counts, groups * sizeof(int32_t));
  RowExchange host = exchange;
  host.send = staging->send.data();
  host.send_counts = staging->send_counts.data();
  host.recv = staging->recv.data();
  host.recv_counts = staging->recv_counts.data();
  host.host_accessible = true;
  QueueAllToAllRows(stream, host);
  stream.CopyToDevice(exchange.recv, staging->recv.data(), floats * sizeof(float));
  stream.CopyToDevice(exchange.recv_counts, staging->recv_counts.data(), groups * sizeof(int32_t));
  stream.HostFunction([staging] { return absl::OkStatus(); });
}

// Each peer's message: its `groups` counts (int32 bits in float slots), then
// the rows in use, group after group.
absl::Status Communicator::ExchangeRowsOnHost(const RowExchange& ex) {
  const auto ranks = static_cast<size_t>(size());
  const auto groups = static_cast<size_t>(ex.groups);
  const auto width = static_cast<size_t>(ex.width);
  std::vector<int64_t> send_floats(ranks), recv_floats(ranks);
  size_t total_send = 0;
  for (size_t p = 0; p < ranks; ++p) {
    size_t rows = 0;
    for (size_t g = 0; g < groups; ++g) {
      const int32_t n = ex.send_counts[p * groups + g];
      if (n < 0 || n > ex.capacity) {
        return absl::InternalError(absl::StrCat(
            "rank ", rank(), " has ", n, " rows to send in a group of capacity ", ex.capacity));
      }
      rows += static_cast<size_t>(n);
    }
    send_floats[p] = static_cast<int64_t>(groups + rows * width);
    total_send += static_cast<size_t>(send_floats[p]);
  }
  if (absl::Status s = AllToAllCounts(send_floats, recv_floats); !s.ok()) return s;
  size_t total_recv = 0;
  for (size_t p = 0; p < ranks; ++p) {
    if (recv_floats[p] < static_cast<int64_t>(groups)) {
      return absl::InternalError(absl::StrCat("rank ", rank(), " got ", recv_floats[p],
                                              " floats from rank ", p, ", less than the ", groups,
                                              " counts every message starts with"));
    }
    total_recv += static_cast<size_t>(recv_floats[p]);
  }
  if (send_staging_.size() < total_send) send_staging_.resize(total_send);
  if (recv_staging_.size() < total_recv) recv_staging_.resize(total_recv);
  float* out = send_staging_.data();
  for (size_t p = 0; p < ranks; ++p) {
    std::memcpy(out, ex.send_counts + p * groups, groups * sizeof(int32_t));
    out += groups;
    for (size_t g = 0; g < groups; ++g) {
      const auto n = static_cast<size_t>(ex.send_counts[p * groups + g]);
      const float* rows = ex.send + ((p * groups + g) * static_cast<size_t>(ex.capacity)) * width;
      std::memcpy(out, rows, n * width * sizeof(float));
      out += n * width;
    }
  }
  if (absl::Status s = AllToAllV({send_staging_.data(), total_send}, send_floats,
                                 {recv_staging_.data(), total_recv}, recv_floats);
      !s.ok()) {
    return s;
  }
  const float* in = recv_staging_.data();
  for (size_t p = 0; p < ranks; ++p) {
    const float* end = in + recv_floats[p];
    int32_t* counts = ex.recv_counts + p * groups;
    std::memcpy(counts, in, groups * sizeof(int32_t));
    in += groups;
    for (size_t g = 0; g < groups; ++g) {
      const int32_t n = counts[g];
      if (n < 0 || n > ex.capacity || in + static_cast<size_t>(n) * width > end) {
        return absl::InternalError(absl::StrCat(
            "rank ", rank(), " got ", n, " rows from rank ", p, " for a group of capacity ",
            ex.capacity, ": the ranks disagree on the step's shapes or the expert placement"));
      }
      float* rows = ex.recv + ((p * groups + g) * static_cast<size_t>(ex.capacity)) * width;
      std::memcpy(rows, in, static_cast<size_t>(n) * width * sizeof(float));
      in += static_cast<size_t>(n) * width;
    }
    if (in != end) {
      return absl::InternalError(absl::StrCat("rank ", rank(), " got ", recv_floats[p],
                                              " floats from rank ", p,
                                              ", more than its counts describe"));
    }
  }
  return absl::OkStatus();
}

absl::Status LocalCommunicator::AllToAllCounts(std::span<const int64_t> send,
                                               std::span<int64_t> recv) {
  if (absl::Status s = CheckSpans(*this, send.size(), recv.size()); !s.ok()) return s;
  recv[0] = send[0];
  return absl::OkStatus();
}

absl::Status LocalCommunicator::AllToAllV(std::span<const float> send,
                                          std::span<const int64_t> send_counts,
                                          std::span<float> recv,
                                          std::span<const int64_t> recv_counts) {
  if (absl::Status s = CheckSpans(*this, send_counts.size(), recv_counts.size()); !s.ok()) return s;
  if (send_counts[0] != recv_counts[0] || static_cast<int64_t>(send.size()) < send_counts[0] ||
      static_cast<int64_t>(recv.size()) < recv_counts[0]) {
    return absl::InvalidArgumentError(
        absl::StrCat("local all-to-all: sending ", send_counts[0], " values (buffer ", send.size(),
                     ") but receiving ", recv_counts[0], " (buffer ", recv.size(), ")"));
  }
  if (send_counts[0] > 0) {
    std::memcpy(recv.data(), send.data(), static_cast<size_t>(send_counts[0]) * sizeof(float));
  }
  return absl::OkStatus();
}

absl::Status ReplaceableCommunicator::Replace(std::unique_ptr<Communicator> next) {
  if (next == nullptr || next->rank() != rank_ || next->size() != size_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a communicator for rank ", rank_, " of ", size_, " cannot be replaced by one for ",
        next == nullptr ? std::string("nothing")
                        : absl::StrCat("rank ", next->rank(), " of ", next->size())));
  }
  inner_ = std::move(next);
  return absl::OkStatus();
}

std::string ReplaceableCommunicator::name() const {
  return inner_ == nullptr ? "unconnected" : inner_->name();
}

absl::Status ReplaceableCommunicator::AllToAllCounts(std::span<const int64_t> send,
                                                     std::span<int64_t> recv) {
  if (inner_ == nullptr) return absl::UnavailableError("the group is not formed");
  return inner_->AllToAllCounts(send, recv);
}

absl::Status ReplaceableCommunicator::AllToAllV(std::span<const float> send,
                                                std::span<const int64_t> send_counts,
                                                std::span<float> recv,
                                                std::span<const int64_t> recv_counts) {
  if (inner_ == nullptr) return absl::UnavailableError("the group is not formed");
  return inner_->AllToAllV(send, send_counts, recv, recv_counts);
}

void ReplaceableCommunicator::QueueAllToAllRows(Stream& stream, const RowExchange& exchange) {
  if (inner_ == nullptr) {
    stream.HostFunction([] { return absl::UnavailableError("the group is not formed"); });
    return;
  }
  inner_->QueueAllToAllRows(stream, exchange);
}

double ReplaceableCommunicator::exchange_seconds() const {
  return inner_ == nullptr ? 0.0 : inner_->exchange_seconds();
}

std::unique_ptr<Communicator> WithEmulatedLink(std::unique_ptr<Communicator> inner,
                                               const EmulatedLink& link) {
  if (!link.enabled()) return inner;
  return std::make_unique<EmulatedLinkCommunicator>(std::move(inner), link);
}

}  // namespace moeserve
