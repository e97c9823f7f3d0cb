#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_tensor.h"
#include "kernels/cuda/gemm.h"

namespace moeserve::cuda {
namespace {

std::string DeviceName(int device) { return absl::StrCat("cuda:", device); }

// A stream's first failure, shared with the events recorded on it and the
// host functions queued on it (which run on CUDA's callback thread). Marks
// number the points that can fail (host functions, failed queueing calls),
// from 1, in queue order.
class FailureLog {
 public:
  void Fail(uint64_t mark, absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    if (failed_at_ != 0) return;
    failed_at_ = mark;
    failure_ = std::move(status);
  }
  bool failed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return failed_at_ != 0;
  }
  // The failure, if it happened at or before `mark`.
  absl::Status FailureUpTo(uint64_t mark) const {
    std::lock_guard<std::mutex> lock(mu_);
    return failed_at_ != 0 && failed_at_ <= mark ? failure_ : absl::OkStatus();
  }
  // Returns and forgets the failure (a graph's, after each launch).
  absl::Status Take() {
    std::lock_guard<std::mutex> lock(mu_);
    absl::Status s = std::move(failure_);
    failure_ = absl::OkStatus();
    failed_at_ = 0;
    return s;
  }

 private:
  mutable std::mutex mu_;
  uint64_t failed_at_ = 0;  // 0: none
  absl::Status failure_;
};

// What a host function needs when CUDA calls it.
struct HostCall {
  std::function<absl::Status()> fn;
  std::shared_ptr<FailureLog> log;  // the stream's (eager) or the graph's (captured)
  uint64_t mark = 0;
  bool one_shot = true;  // eager calls delete themselves; a graph owns its calls
};

void CUDART_CB RunHostCall(void* data) {
  auto* call = static_cast<HostCall*>(data);
  if (!call->log->failed()) {
    absl::Status s = call->fn();
    if (!s.ok()) call->log->Fail(call->mark, std::move(s));
  }
  if (call->one_shot) delete call;
}

class CudaEvent final : public Event {
 public:
  CudaEvent(int device, cudaEvent_t event, absl::Status create_error)
      : device_(device), event_(event), create_error_(std::move(create_error)) {}
  ~CudaEvent() override {
    if (event_ != nullptr) (void)cudaEventDestroy(event_);
  }

  absl::Status Synchronize() override {
    if (!create_error_.ok()) return create_error_;
    if (recorder_ == nullptr) return absl::OkStatus();  // never recorded: complete
    if (absl::Status s = CudaStatus(cudaEventSynchronize(event_),
                                    absl::StrCat(DeviceName(device_), " event synchronize"));
        !s.ok()) {
      return s;
    }
    return recorder_->FailureUpTo(mark_);
  }

  cudaEvent_t event() const { return event_; }
  const absl::Status& create_error() const { return create_error_; }
  void SetPoint(std::shared_ptr<FailureLog> recorder, uint64_t mark) {
    recorder_ = std::move(recorder);
    mark_ = mark;
  }
  const std::shared_ptr<FailureLog>& recorder() const { return recorder_; }
  uint64_t mark() const { return mark_; }

 private:
  const int device_;
  cudaEvent_t event_;
  const absl::Status create_error_;
  std::shared_ptr<FailureLog> recorder_;  // the stream of the last Record; null: never
  uint64_t mark_ = 0;                     // its marks at that Record
};

class CudaGraph final : public Graph {
 public:
  CudaGraph(int device, cudaGraph_t graph, cudaGraphExec_t exec,
            std::vector<std::unique_ptr<HostCall>> calls, std::shared_ptr<FailureLog> log)
      : device_(device),
        graph_(graph),
        exec_(exec),
        calls_(std::move(calls)),
        log_(std::move(log)) {
    (void)cudaGraphGetNodes(graph_, nullptr, &nodes_);
  }
  ~CudaGraph() override {
    (void)cudaGraphExecDestroy(exec_);
    (void)cudaGraphDestroy(graph_);
  }

  absl::Status Launch(Stream& stream) override;
  size_t size() const override { return nodes_; }

 private:
  const int device_;
  cudaGraph_t graph_;
  cudaGraphExec_t exec_;
  std::vector<std::unique_ptr<HostCall>> calls_;  // the captured host functions' payloads
  std::shared_ptr<FailureLog> log_;               // their failures, until a launch carries them
  size_t nodes_ = 0;
};

class CudaStream final : public Stream {
 public:
  CudaStream(int device, cudaStream_t stream, absl::Status create_error)
      : device_(device), stream_(stream), log_(std::make_shared<FailureLog>()) {
    if (!create_error.ok()) log_->Fail(++marks_, std::move(create_error));
  }
  ~CudaStream() override {
    if (stream_ == nullptr) return;
    (void)cudaSetDevice(device_);
    if (capturing_) {
      cudaGraph_t graph = nullptr;
      (void)cudaStreamEndCapture(stream_, &graph);
      if (graph != nullptr) (void)cudaGraphDestroy(graph);
    }
    (void)cudaStreamSynchronize(stream_);  // runs (and frees) the pending host calls
    (void)cudaStreamDestroy(stream_);
  }

  cudaStream_t native() const { return stream_; }

  void Wait(Event& event) override {
    auto& e = static_cast<CudaEvent&>(event);
    if (capturing_) {
      capture_error_ = absl::FailedPreconditionError(
          "an event wait was queued on a stream while it was being captured");
      return;
    }
    if (!e.create_error().ok()) return Fail(e.create_error());
    if (e.recorder() == nullptr) return;  // never recorded: complete
    if (!Ready()) return;
    Check(cudaStreamWaitEvent(stream_, e.event(), 0), "event wait");
    uint64_t& mark = waited_[e.recorder()];
    mark = std::max(mark, e.mark());
  }

  void Record(Event& event) override {
    auto& e = static_cast<CudaEvent&>(event);
    if (capturing_) {
      capture_error_ = absl::FailedPreconditionError(
          "an event was recorded on a stream while it was being captured");
      return;
    }
    if (!e.create_error().ok()) return Fail(e.create_error());
    if (!Ready()) return;
    Check(cudaEventRecord(e.event(), stream_), "event record");
    e.SetPoint(log_, marks_);
  }

  absl::Status Synchronize() override {
    if (capturing_) {
      return absl::FailedPreconditionError("Synchronize on a stream that is being captured");
    }
    if (stream_ != nullptr) {
      (void)cudaSetDevice(device_);
      Check(cudaStreamSynchronize(stream_), "queued work");
    }
    if (absl::Status s = log_->FailureUpTo(marks_); !s.ok()) return s;
    for (const auto& [other, mark] : waited_) {
      if (absl::Status s = other->FailureUpTo(mark); !s.ok()) {
        log_->Fail(++marks_, s);  // sticky here too
        return s;
      }
    }
    return absl::OkStatus();
  }

  void CopyToDevice(void* dst, const void* src, size_t bytes) override { Copy(dst, src, bytes); }
  void CopyToHost(void* dst, const void* src, size_t bytes) override { Copy(dst, src, bytes); }
  void CopyOnDevice(void* dst, const void* src, size_t bytes) override { Copy(dst, src, bytes); }
  void Fill(void* dst, uint8_t byte, size_t bytes) override {
    if (bytes == 0 || !Ready()) return;
    Check(cudaMemsetAsync(dst, byte, bytes, stream_), "fill");
  }

  void HostFunction(std::function<absl::Status()> fn) override {
    if (!Ready()) return;
    auto call = std::make_unique<HostCall>();
    call->fn = std::move(fn);
    call->mark = ++marks_;
    call->one_shot = !capturing_;
    call->log = capturing_ ? graph_log_ : log_;
    HostCall* raw = call.get();
    if (capturing_) captured_.push_back(std::move(call));
    const cudaError_t err = cudaLaunchHostFunc(stream_, RunHostCall, raw);
    if (err != cudaSuccess) {
      if (capturing_) {
        captured_.pop_back();
        capture_error_ = CudaStatus(err, absl::StrCat(DeviceName(device_), " host function"));
      } else {
        Fail(CudaStatus(err, absl::StrCat(DeviceName(device_), " host function")));
      }
      return;
    }
    if (!capturing_) (void)call.release();  // RunHostCall deletes it
  }

  absl::Status BeginCapture() override {
    if (capturing_) return absl::FailedPreconditionError("the stream is already being captured");
    if (stream_ == nullptr) return log_->FailureUpTo(marks_);
    (void)cudaSetDevice(device_);
    if (absl::Status s =
            CudaStatus(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal),
                       absl::StrCat(DeviceName(device_), " begin capture"));
        !s.ok()) {
      return s;
    }
    capturing_ = true;
    captured_.clear();
    capture_error_ = absl::OkStatus();
    graph_log_ = std::make_shared<FailureLog>();
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Graph>> EndCapture() override {
    if (!capturing_) return absl::FailedPreconditionError("the stream is not being captured");
    capturing_ = false;
    (void)cudaSetDevice(device_);
    cudaGraph_t graph = nullptr;
    const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
    if (!capture_error_.ok() || end != cudaSuccess) {
      if (graph != nullptr) (void)cudaGraphDestroy(graph);
      captured_.clear();
      if (!capture_error_.ok()) return capture_error_;
      return CudaStatus(end, absl::StrCat(DeviceName(device_),
                                          " end capture (work queued during capture was not "
                                          "capturable, or another thread broke the capture)"));
    }
    cudaGraphExec_t exec = nullptr;
    if (absl::Status s = CudaStatus(cudaGraphInstantiate(&exec, graph, 0),
                                    absl::StrCat(DeviceName(device_), " graph instantiate"));
        !s.ok()) {
      (void)cudaGraphDestroy(graph);
      captured_.clear();
      return s;
    }
    return std::unique_ptr<Graph>(
        new CudaGraph(device_, graph, exec, std::move(captured_), std::move(graph_log_)));
  }

  StreamTimes times() const override { return {0, 0, false}; }
  void ResetTimes() override {}

 private:
  // Whether work can be queued: a stream that could not be created queues
  // nothing (its creation error is its failure).
  bool Ready() const { return stream_ != nullptr; }
  void Fail(absl::Status status) {
    if (capturing_) {
      if (capture_error_.ok()) capture_error_ = std::move(status);
      return;
    }
    log_->Fail(++marks_, std::move(status));
  }
  void Check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) Fail(CudaStatus(err, absl::StrCat(DeviceName(device_), " ", what)));
  }
  void Copy(void* dst, const void* src, size_t bytes) {
    if (bytes == 0 || !Ready()) return;
    Check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_), "copy");
  }

  const int device_;
  cudaStream_t stream_;  // owned; null when creation failed
  std::shared_ptr<FailureLog> log_;
  // Host side: touched only by the thread that feeds the stream.
  uint64_t marks_ = 0;                                      // failure points queued so far
  std::map<std::shared_ptr<FailureLog>, uint64_t> waited_;  // streams waited on, latest mark
  bool capturing_ = false;
  absl::Status capture_error_;
  std::vector<std::unique_ptr<HostCall>> captured_;  // payloads of captured host functions
  std::shared_ptr<FailureLog> graph_log_;            // their failure log
};

absl::Status CudaGraph::Launch(Stream& stream) {
  cudaStream_t native = NativeStream(stream);
  if (native == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(DeviceName(device_), ": a CUDA graph can only be launched on a CUDA stream"));
  }
  (void)cudaSetDevice(device_);
  if (absl::Status s = CudaStatus(cudaGraphLaunch(exec_, native),
                                  absl::StrCat(DeviceName(device_), " graph launch"));
      !s.ok()) {
    return s;
  }
  // The graph's host functions report to the graph; hand what they report to
  // the launching stream, in its order.
  if (!calls_.empty()) stream.HostFunction([log = log_] { return log->Take(); });
  return absl::OkStatus();
}

[[noreturn]] void Abort(const absl::Status& status) {
  std::fprintf(stderr, "moeserve cuda backend: %s\n", status.ToString().c_str());
  std::abort();
}

// Makes a device current for a scope and restores the previous one.
class ScopedDevice {
 public:
  explicit ScopedDevice(int device) {
    (void)cudaGetDevice(&previous_);
    status_ = CudaStatus(cudaSetDevice(device), absl::StrCat(DeviceName(device), " set device"));
  }
  ~ScopedDevice() { (void)cudaSetDevice(previous_); }
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;
  const absl::Status& status() const { return status_; }

 private:
  int previous_ = 0;
  absl::Status status_;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, std::string name) : device_(device), name_(std::move(name)) {}
  ~CudaBackend() override {
    if (lt_ != nullptr) cublasLtDestroy(lt_);
  }

  DeviceId device() const override { return {DeviceKind::kCuda, device_}; }
  std::string name() const override { return name_; }

  absl::StatusOr<std::shared_ptr<std::byte[]>> Allocate(size_t bytes) override {
    allocations_.fetch_add(1, std::memory_order_relaxed);
    if (absl::Status s = CudaStatus(cudaSetDevice(device_), absl::StrCat(name_, " set device"));
        !s.ok()) {
      return s;
    }
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, std::max<size_t>(bytes, 1));  // 256-byte aligned
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // not sticky: clear it
      size_t free_bytes = 0, total_bytes = 0;
      (void)cudaMemGetInfo(&free_bytes, &total_bytes);
      return absl::ResourceExhaustedError(absl::StrCat(name_, ": cannot allocate ", bytes,
                                                       " bytes of device memory (", free_bytes,
                                                       " of ", total_bytes, " bytes free)"));
    }
    if (absl::Status s = CudaStatus(err, absl::StrCat(name_, ": cudaMalloc of ", bytes, " bytes"));
        !s.ok()) {
      return s;
    }
    const int device = device_;
    return std::shared_ptr<std::byte[]>(static_cast<std::byte*>(p), [device](std::byte* q) {
      int current = 0;
      (void)cudaGetDevice(&current);
      (void)cudaSetDevice(device);
      (void)cudaFree(q);
      (void)cudaSetDevice(current);
    });
  }

  std::unique_ptr<Stream> CreateStream() override {
    cudaStream_t stream = nullptr;
    absl::Status s = CudaStatus(cudaSetDevice(device_), absl::StrCat(name_, " set device"));
    if (s.ok()) {
      s = CudaStatus(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                     absl::StrCat(name_, " stream create"));
    }
    if (!s.ok()) stream = nullptr;
    return std::make_unique<CudaStream>(device_, stream, std::move(s));
  }

  std::unique_ptr<Event> CreateEvent() override {
    cudaEvent_t event = nullptr;
    absl::Status s = CudaStatus(cudaSetDevice(device_), absl::StrCat(name_, " set device"));
    if (s.ok()) {
      s = CudaStatus(cudaEventCreateWithFlags(&event, cudaEventDisableTiming),
                     absl::StrCat(name_, " event create"));
    }
    if (!s.ok()) event = nullptr;
    return std::make_unique<CudaEvent>(device_, event, std::move(s));
  }

  // The op set cannot be made without its stream and cuBLASLt: a broken
  // invariant at start-up, so it aborts naming the cause (the interface has
  // no status here).
  std::unique_ptr<Ops> CreateOps(Stream& stream) override {
    cudaStream_t native = NativeStream(stream);
    if (native == nullptr) {
      Abort(absl::FailedPreconditionError(
          absl::StrCat(name_, ": CreateOps needs a stream this backend created and could create: ",
                       stream.Synchronize().ToString())));
    }
    CudaOps::Options options;
    options.device = device_;
    options.stream = native;
    auto ops = CudaOps::Create(options);
    if (!ops.ok()) Abort(ops.status());
    return *std::move(ops);
  }

  bool host_accessible() const override { return false; }
  int64_t allocations() const override { return allocations_.load(std::memory_order_relaxed); }

  absl::StatusOr<Tensor> LoadWeight(const HostWeight& w, WeightUse use) override;

 private:
  absl::StatusOr<Tensor> Upload(const HostWeight& w, WeightUse use);
  absl::StatusOr<Tensor> UploadAs(const HostWeight& w, DType dtype);
  absl::StatusOr<Tensor> UploadFp8Matrix(const HostWeight& w);

  const int device_;
  const std::string name_;  // "cuda:0 (NVIDIA H200)"
  std::atomic<int64_t> allocations_{0};
  std::mutex fp8_mu_;              // guards the two below: weights may load from several threads
  cublasLtHandle_t lt_ = nullptr;  // for CheckBlockScaledFp8; made at the first FP8 weight
  std::map<std::pair<int64_t, int64_t>, absl::Status> fp8_shapes_;  // [out, in] -> its check
};

// `w` in `dtype` in this backend's memory: its bytes as they are, or
// converted on the host (through float32) first.
absl::StatusOr<Tensor> CudaBackend::UploadAs(const HostWeight& w, DType dtype) {
  std::vector<int64_t> shape(w.shape.begin(), w.shape.end());
  Tensor host;  // the converted weight, when it is converted
  const void* src = w.data;
  if (dtype != w.dtype) {
    auto f32 = HostWeightToF32(w);
    if (!f32.ok()) return f32.status();
    host = *std::move(f32);
    if (dtype == DType::kBF16) {
      Tensor bf16 = Tensor::Empty(DType::kBF16, shape);
      auto* bits = static_cast<uint16_t*>(bf16.raw());
      for (int64_t i = 0; i < host.numel(); ++i) bits[i] = F32ToBf16(host.f32()[i]);
      host = std::move(bf16);
    }
    src = host.raw();
  }
  auto t = AllocateTensor(dtype, std::move(shape));
  if (!t.ok()) return t.status();
  if (absl::Status s = CopyToDevice(t->raw(), src, t->nbytes()); !s.ok()) return s;
  return t;
}

absl::StatusOr<Tensor> CudaBackend::LoadWeight(const HostWeight& w, WeightUse use) {
  ScopedDevice scoped(device_);  // cudaMalloc and the copies go to this device
  absl::StatusOr<Tensor> t =
      scoped.status().ok() ? Upload(w, use) : absl::StatusOr<Tensor>(scoped.status());
  if (t.ok()) {
    // cudaMemcpy from pageable memory may return before the DMA lands; the
    // backend's streams are non-blocking, so make the weight complete here.
    const cudaError_t err = cudaStreamSynchronize(cudaStreamLegacy);
    if (err != cudaSuccess) t = CudaStatus(err, "weight upload");
  }
  if (t.ok()) return t;
  return absl::Status(t.status().code(), absl::StrCat(name_, ": tensor ", std::string(w.name), ": ",
                                                      t.status().message()));
}

absl::StatusOr<Tensor> CudaBackend::Upload(const HostWeight& w, WeightUse use) {
  switch (use) {
    case WeightUse::kVector:  // RmsNorm takes F32 or BF16, the routing bias F32 only
      return UploadAs(w, DType::kF32);
    case WeightUse::kEmbedding:  // F32 or BF16; an FP8 table keeps its exact values
      return UploadAs(w, w.dtype == DType::kBF16 ? DType::kBF16 : DType::kF32);
    case WeightUse::kMlaKvB:  // the MLA ops read F32 or BF16 parts of it
      return UploadAs(w, w.dtype == DType::kF32 ? DType::kF32 : DType::kBF16);
    case WeightUse::kMatrix:
      if (w.dtype == DType::kF8E4M3) return UploadFp8Matrix(w);
      return UploadAs(w, w.dtype);
  }
  return absl::InvalidArgumentError("unknown weight use");
}

absl::StatusOr<Tensor> CudaBackend::UploadFp8Matrix(const HostWeight& w) {
  if (w.shape.size() != 2 || w.scale_inv == nullptr) {
    return absl::InvalidArgumentError("an F8_E4M3 matrix must be 2-D with block scales");
  }
  if (w.block != kFp8Block) {
    return absl::InvalidArgumentError(
        absl::StrCat("F8_E4M3 weight in ", w.block, "x", w.block,
                     " blocks; the GPU's block-scaled FP8 product takes 128x128 blocks only"));
  }
  const int64_t rows = w.shape[0], cols = w.shape[1];
  {
    std::lock_guard<std::mutex> lock(fp8_mu_);
    if (lt_ == nullptr) {
      if (absl::Status s = CublasStatus(cublasLtCreate(&lt_), "cublasLtCreate"); !s.ok()) {
        lt_ = nullptr;
        return s;
      }
    }
    auto [it, inserted] = fp8_shapes_.try_emplace({rows, cols});
    if (inserted) {
      it->second =
          CheckBlockScaledFp8(device_, lt_, rows, cols, CudaOps::Options{}.gemm_workspace_bytes);
    }
    if (!it->second.ok()) return it->second;
  }
  auto memory = Allocate(Fp8WeightBytes(rows, cols));
  if (!memory.ok()) return memory.status();
  Tensor t = Tensor::FromStorage(DType::kF8E4M3, {rows, cols}, *std::move(memory), Device::kCuda);
  if (absl::Status s = WriteFp8Weight(static_cast<const uint8_t*>(w.data), w.scale_inv, t);
      !s.ok()) {
    return s;
  }
  return t;
}

}  // namespace

cudaStream_t NativeStream(Stream& stream) {
  auto* cuda_stream = dynamic_cast<CudaStream*>(&stream);
  return cuda_stream == nullptr ? nullptr : cuda_stream->native();
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device) {
  const std::string name = DeviceName(device);
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return absl::UnavailableError(
        absl::StrCat(name, ": no usable CUDA device or driver: ", cudaGetErrorName(err), " (",
                     cudaGetErrorString(err), ")"));
  }
  if (count == 0) {
    return absl::UnavailableError(
        absl::StrCat(name, ": no CUDA device visible (check the driver and CUDA_VISIBLE_DEVICES)"));
  }
  if (device < 0 || device >= count) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": no such device; ", count,
                                                   " visible (cuda:0 to cuda:", count - 1, ")"));
  }
  if (absl::Status s = CudaStatus(cudaSetDevice(device), absl::StrCat(name, " set device"));
      !s.ok()) {
    return s;
  }
  cudaDeviceProp prop{};
  if (absl::Status s =
          CudaStatus(cudaGetDeviceProperties(&prop, device), absl::StrCat(name, " properties"));
      !s.ok()) {
    return s;
  }
  return std::unique_ptr<Backend>(
      new CudaBackend(device, absl::StrCat(name, " (", prop.name, ")")));
}

}  // namespace moeserve::cuda
