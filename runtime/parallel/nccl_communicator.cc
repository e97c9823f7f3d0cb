#include "runtime/parallel/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <numeric>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/cuda/cuda_backend.h"

namespace moeserve {
namespace {

using Clock = std::chrono::steady_clock;

std::string NcclText(ncclResult_t r, ncclComm_t comm) {
  std::string text = absl::StrCat(ncclGetErrorString(r));
  if (comm != nullptr) {
    const char* last = ncclGetLastError(comm);
    if (last != nullptr && last[0] != '\0') absl::StrAppend(&text, " (", last, ")");
  }
  return text;
}

// The first failure of a communicator, shared with the host functions that
// report it to streams (they may run after the communicator is gone).
class Failure {
 public:
  void Set(std::string what) {
    std::lock_guard<std::mutex> lock(mu_);
    if (what_.empty()) what_ = std::move(what);
  }
  absl::Status status() const {
    std::lock_guard<std::mutex> lock(mu_);
    if (what_.empty()) return absl::OkStatus();
    return absl::UnavailableError(absl::StrCat("nccl communicator failed earlier: ", what_));
  }

 private:
  mutable std::mutex mu_;
  std::string what_;  // empty: none
};

}  // namespace

struct NcclCommunicator::State {
  NcclOptions options;
  std::shared_ptr<Failure> failure = std::make_shared<Failure>();
  std::mutex comm_mu;             // guards comm: enqueueing vs the watchdog's abort
  ncclComm_t comm = nullptr;      // null once aborted
  cudaStream_t stream = nullptr;  // ours, for the host-span collectives
  void* staging = nullptr;        // device memory of the host-span collectives
  size_t staging_bytes = 0;

  // Watchdog: exchanges queued eagerly, oldest first.
  struct Pending {
    cudaEvent_t done = nullptr;
    Clock::time_point deadline;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Pending> pending;
  bool stop = false;
  std::thread watchdog;

  std::string Who() const { return absl::StrCat("nccl rank ", options.rank, "/", options.size); }

  // Records the failure and aborts the NCCL communicator (its kernels, here
  // and at the peers, return).
  void Abort(std::string what) {
    failure->Set(what);
    std::lock_guard<std::mutex> lock(comm_mu);
    if (comm != nullptr) (void)ncclCommAbort(comm);
    comm = nullptr;
  }

  // After a non-blocking call: polls until NCCL finished enqueueing. Caller
  // holds comm_mu.
  absl::Status Settle(ncclResult_t r, const char* what) {
    const Clock::time_point deadline = Clock::now() + options.timeout;
    while (r == ncclInProgress) {
      if (Clock::now() > deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            Who(), ": ", what, " still in progress after ", options.timeout.count(), " ms"));
      }
      std::this_thread::yield();
      if (ncclCommGetAsyncError(comm, &r) != ncclSuccess) break;
    }
    if (r != ncclSuccess) {
      return absl::UnavailableError(absl::StrCat(Who(), ": ", what, ": ", NcclText(r, comm)));
    }
    return absl::OkStatus();
  }

  void Watch(cudaStream_t s) {
    cudaEvent_t done = nullptr;
    if (cudaEventCreateWithFlags(&done, cudaEventDisableTiming) != cudaSuccess ||
        cudaEventRecord(done, s) != cudaSuccess) {
      if (done != nullptr) (void)cudaEventDestroy(done);
      return;  // unwatched; the stream's own errors still show
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      pending.push_back({done, Clock::now() + options.timeout});
    }
    cv.notify_one();
  }

  void WatchdogLoop() {
    (void)cudaSetDevice(options.device);
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      cv.wait(lock, [&] { return stop || !pending.empty(); });
      if (stop) break;
      const Pending next = pending.front();
      lock.unlock();
      const cudaError_t q = cudaEventQuery(next.done);
      bool finished = q != cudaErrorNotReady;
      if (q != cudaSuccess && q != cudaErrorNotReady) {
        Abort(absl::StrCat(Who(), ": exchange failed on the device: ", cudaGetErrorString(q)));
      } else if (!finished && Clock::now() > next.deadline) {
        Abort(absl::StrCat(Who(), ": an exchange did not complete within ", options.timeout.count(),
                           " ms (a peer is lost or hung); aborted"));
        finished = true;
      }
      if (!finished) std::this_thread::sleep_for(std::chrono::microseconds(200));
      lock.lock();
      if (finished) {
        (void)cudaEventDestroy(next.done);
        pending.pop_front();
      }
    }
    for (const Pending& p : pending) (void)cudaEventDestroy(p.done);
    pending.clear();
  }

  // Blocks until the own stream is done or the timeout passes (then aborts).
  absl::Status WaitStream(const char* what) {
    const Clock::time_point deadline = Clock::now() + options.timeout;
    for (;;) {
      const cudaError_t q = cudaStreamQuery(stream);
      if (q == cudaSuccess) return absl::OkStatus();
      if (q != cudaErrorNotReady) {
        std::string text = absl::StrCat(Who(), ": ", what, ": ", cudaGetErrorString(q));
        Abort(text);
        return absl::UnavailableError(text);
      }
      if (Clock::now() > deadline) {
        std::string text = absl::StrCat(Who(), ": ", what, " did not complete within ",
                                        options.timeout.count(), " ms (a peer is lost or hung)");
        Abort(text);
        return absl::DeadlineExceededError(text);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  absl::StatusOr<void*> Staging(size_t bytes) {
    if (bytes <= staging_bytes) return staging;
    if (staging != nullptr) (void)cudaFree(staging);
    staging = nullptr;
    staging_bytes = 0;
    if (cudaMalloc(&staging, bytes) != cudaSuccess) {
      (void)cudaGetLastError();
      return absl::ResourceExhaustedError(absl::StrCat(
          Who(), ": cannot allocate ", bytes, " bytes of staging on cuda:", options.device));
    }
    staging_bytes = bytes;
    return staging;
  }

  // One NCCL group of sends and recvs on `s` built by `body`; marks the
  // communicator failed on error.
  template <class Body>
  absl::Status Group(cudaStream_t s, const char* what, Body&& body) {
    if (absl::Status st = failure->status(); !st.ok()) return st;
    std::lock_guard<std::mutex> lock(comm_mu);
    if (comm == nullptr) return failure->status();
    ncclResult_t r = ncclGroupStart();
    if (r == ncclSuccess) r = body(s);
    const ncclResult_t end = ncclGroupEnd();
    if (r == ncclSuccess || r == ncclInProgress) r = end;
    absl::Status st = Settle(r, what);
    if (!st.ok()) {
      failure->Set(std::string(st.message()));
      (void)ncclCommAbort(comm);
      comm = nullptr;
    }
    return st;
  }
};

NcclCommunicator::NcclCommunicator(const NcclOptions& options, std::unique_ptr<State> state)
    : options_(options), state_(std::move(state)) {
  state_->watchdog = std::thread([s = state_.get()] { s->WatchdogLoop(); });
}

NcclCommunicator::~NcclCommunicator() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stop = true;
  }
  state_->cv.notify_all();
  state_->watchdog.join();
  (void)cudaSetDevice(options_.device);
  if (state_->stream != nullptr) {
    (void)cudaStreamSynchronize(state_->stream);
    (void)cudaStreamDestroy(state_->stream);
  }
  if (state_->staging != nullptr) (void)cudaFree(state_->staging);
  if (state_->comm != nullptr) {
    // Graceful when healthy; abort if finalizing does not settle in time.
    if (state_->Settle(ncclCommFinalize(state_->comm), "finalize").ok()) {
      (void)ncclCommDestroy(state_->comm);
    } else {
      (void)ncclCommAbort(state_->comm);
    }
  }
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(
    const NcclOptions& options, std::shared_ptr<gloo::rendezvous::Store> store) {
  const std::string who = absl::StrCat("nccl rank ", options.rank, "/", options.size);
  if (options.size < 1 || options.rank < 0 || options.rank >= options.size) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": rank outside [0, size)"));
  }
  if (store == nullptr) return absl::InvalidArgumentError(absl::StrCat(who, ": no store"));
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    return absl::UnavailableError(absl::StrCat(who, ": no CUDA device"));
  }
  if (options.device < 0 || options.device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, ": cuda:", options.device, " requested, ", count, " visible"));
  }
  if (cudaSetDevice(options.device) != cudaSuccess) {
    return absl::UnavailableError(absl::StrCat(who, ": cannot use cuda:", options.device));
  }
  auto state = std::make_unique<State>();
  state->options = options;
  const std::string base = absl::StrCat(options.prefix, "/nccl/", options.generation, "/");
  const std::string id_key = base + "unique_id";
  ncclUniqueId id{};
  try {
    store->set(absl::StrCat(base, "joined/", options.rank), std::vector<char>{'1'});
    if (options.rank == 0) {
      if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) {
        return absl::UnavailableError(
            absl::StrCat(who, ": ncclGetUniqueId: ", NcclText(r, nullptr)));
      }
      const auto* bytes = reinterpret_cast<const char*>(&id);
      store->set(id_key, std::vector<char>(bytes, bytes + sizeof(id)));
    } else {
      store->wait({id_key}, options.timeout);
      const std::vector<char> bytes = store->get(id_key);
      if (bytes.size() != sizeof(id)) {
        return absl::InvalidArgumentError(absl::StrCat(
            who, ": store key ", id_key, " holds ", bytes.size(), " bytes, not an ncclUniqueId"));
      }
      std::memcpy(&id, bytes.data(), sizeof(id));
    }
  } catch (const std::exception& e) {
    return absl::DeadlineExceededError(absl::StrCat(who, ": no NCCL id from rank 0 under ", id_key,
                                                    " within ", options.timeout.count(),
                                                    " ms: ", e.what()));
  }
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclResult_t r = ncclCommInitRankConfig(&state->comm, options.size, id, options.rank, &config);
  absl::Status init =
      state->comm == nullptr && r != ncclSuccess && r != ncclInProgress
          ? absl::UnavailableError(absl::StrCat(who, ": init: ", NcclText(r, nullptr)))
          : state->Settle(r, "init");
  if (!init.ok()) {
    if (state->comm != nullptr) (void)ncclCommAbort(state->comm);
    state->comm = nullptr;
    if (init.code() != absl::StatusCode::kDeadlineExceeded) return init;
    std::vector<int> missing;
    for (int p = 0; p < options.size; ++p) {
      try {
        store->wait({absl::StrCat(base, "joined/", p)}, std::chrono::milliseconds(1));
      } catch (const std::exception&) {
        missing.push_back(p);
      }
    }
    return absl::DeadlineExceededError(absl::StrCat(
        who, ": the group did not form within ", options.timeout.count(), " ms; ",
        missing.empty() ? std::string("every rank joined the store, so a rank could not connect "
                                      "(network, NCCL_SOCKET_IFNAME)")
                        : absl::StrCat("ranks that never joined: ", absl::StrJoin(missing, ", "))));
  }
  if (cudaStreamCreateWithFlags(&state->stream, cudaStreamNonBlocking) != cudaSuccess) {
    (void)ncclCommAbort(state->comm);
    return absl::UnavailableError(absl::StrCat(who, ": cannot create a CUDA stream"));
  }
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(options, std::move(state)));
}

absl::Status NcclCommunicator::AllToAllCounts(std::span<const int64_t> send,
                                              std::span<int64_t> recv) {
  const auto n = static_cast<size_t>(size());
  if (send.size() != n || recv.size() != n) {
    return absl::InvalidArgumentError("nccl: AllToAllCounts needs size() values each way");
  }
  (void)cudaSetDevice(options_.device);
  auto staging = state_->Staging(2 * n * sizeof(int64_t));
  if (!staging.ok()) return staging.status();
  auto* dev = static_cast<int64_t*>(*staging);
  cudaStream_t s = state_->stream;
  (void)cudaMemcpyAsync(dev, send.data(), n * sizeof(int64_t), cudaMemcpyHostToDevice, s);
  if (absl::Status st = state_->Group(s, "all-to-all counts",
                                      [&](cudaStream_t st_) {
                                        ncclResult_t r = ncclSuccess;
                                        for (int p = 0; p < size() && r == ncclSuccess; ++p) {
                                          r = ncclSend(dev + p, 1, ncclInt64, p, state_->comm, st_);
                                          if (r == ncclSuccess) {
                                            r = ncclRecv(dev + n + p, 1, ncclInt64, p, state_->comm,
                                                         st_);
                                          }
                                        }
                                        return r;
                                      });
      !st.ok()) {
    return st;
  }
  (void)cudaMemcpyAsync(recv.data(), dev + n, n * sizeof(int64_t), cudaMemcpyDeviceToHost, s);
  return state_->WaitStream("all-to-all counts");
}

absl::Status NcclCommunicator::AllToAllV(std::span<const float> send,
                                         std::span<const int64_t> send_counts,
                                         std::span<float> recv,
                                         std::span<const int64_t> recv_counts) {
  const auto n = static_cast<size_t>(size());
  if (send_counts.size() != n || recv_counts.size() != n) {
    return absl::InvalidArgumentError("nccl: AllToAllV needs size() counts each way");
  }
  for (size_t p = 0; p < n; ++p) {
    if (send_counts[p] < 0 || recv_counts[p] < 0) {
      return absl::InvalidArgumentError("nccl: AllToAllV counts must be >= 0");
    }
  }
  const auto sent =
      static_cast<size_t>(std::accumulate(send_counts.begin(), send_counts.end(), int64_t{0}));
  const auto received =
      static_cast<size_t>(std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0}));
  if (sent > send.size() || received > recv.size()) {
    return absl::InvalidArgumentError("nccl: AllToAllV counts exceed the buffers");
  }
  (void)cudaSetDevice(options_.device);
  auto staging = state_->Staging(std::max<size_t>((sent + received) * sizeof(float), 1));
  if (!staging.ok()) return staging.status();
  auto* send_dev = static_cast<float*>(*staging);
  float* recv_dev = send_dev + sent;
  cudaStream_t s = state_->stream;
  if (sent > 0) {
    (void)cudaMemcpyAsync(send_dev, send.data(), sent * sizeof(float), cudaMemcpyHostToDevice, s);
  }
  if (absl::Status st = state_->Group(
          s, "all-to-all",
          [&](cudaStream_t st_) {
            ncclResult_t r = ncclSuccess;
            size_t so = 0, ro = 0;
            for (int p = 0; p < size() && r == ncclSuccess; ++p) {
              const auto sc = static_cast<size_t>(send_counts[static_cast<size_t>(p)]);
              const auto rc = static_cast<size_t>(recv_counts[static_cast<size_t>(p)]);
              r = ncclSend(send_dev + so, sc, ncclFloat32, p, state_->comm, st_);
              if (r == ncclSuccess)
                r = ncclRecv(recv_dev + ro, rc, ncclFloat32, p, state_->comm, st_);
              so += sc;
              ro += rc;
            }
            return r;
          });
      !st.ok()) {
    return st;
  }
  if (received > 0) {
    (void)cudaMemcpyAsync(recv.data(), recv_dev, received * sizeof(float), cudaMemcpyDeviceToHost,
                          s);
  }
  return state_->WaitStream("all-to-all");
}

void NcclCommunicator::QueueAllToAllRows(Stream& stream, const RowExchange& ex) {
  cudaStream_t s = cuda::NativeStream(stream);
  if (s == nullptr) {
    stream.HostFunction([] {
      return absl::FailedPreconditionError(
          "nccl: QueueAllToAllRows needs a stream of the CUDA backend");
    });
    return;
  }
  (void)cudaSetDevice(options_.device);
  const auto groups = static_cast<size_t>(ex.groups);
  const auto chunk = static_cast<size_t>(ex.groups * ex.capacity * ex.width);
  absl::Status st = state_->Group(s, "all-to-all rows", [&](cudaStream_t st_) {
    ncclResult_t r = ncclSuccess;
    ncclComm_t comm = state_->comm;
    for (int p = 0; p < size() && r == ncclSuccess; ++p) {
      const auto pp = static_cast<size_t>(p);
      r = ncclSend(ex.send_counts + pp * groups, groups, ncclInt32, p, comm, st_);
      if (r == ncclSuccess)
        r = ncclRecv(ex.recv_counts + pp * groups, groups, ncclInt32, p, comm, st_);
      if (r == ncclSuccess && chunk > 0)
        r = ncclSend(ex.send + pp * chunk, chunk, ncclFloat32, p, comm, st_);
      if (r == ncclSuccess && chunk > 0)
        r = ncclRecv(ex.recv + pp * chunk, chunk, ncclFloat32, p, comm, st_);
    }
    return r;
  });
  if (!st.ok()) {
    stream.HostFunction([st] { return st; });
    return;
  }
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(s, &capture) == cudaSuccess && capture == cudaStreamCaptureStatusNone) {
    state_->Watch(s);
  }
  // Fails the stream if the watchdog aborted this exchange (or any before).
  stream.HostFunction([failure = state_->failure] { return failure->status(); });
}

}  // namespace moeserve
