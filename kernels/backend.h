// A backend: one device's memory, streams, events and op set, behind one
// interface so that the engine code is the same on the CPU and on a GPU.
// Backends: CPU (kernels/cpu/cpu_backend.h, the reference, and the twin the
// tests run on) and CUDA (kernels/cuda/cuda_backend.h). CreateBackend
// (kernels/backend_factory.h) picks one from a DeviceId.
//
// Memory: Allocate is for start-up (weights, KV cache, the step workspace);
// a step allocates nothing (kernels/workspace.h carves the step's buffers out
// of one planned allocation). allocations() counts the calls so tests can
// prove it.
#ifndef MOESERVE_KERNELS_BACKEND_H_
#define MOESERVE_KERNELS_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/host_weight.h"
#include "kernels/ops.h"
#include "kernels/stream.h"
#include "kernels/tensor.h"

namespace moeserve {

class Backend {
 public:
  virtual ~Backend() = default;

  virtual DeviceId device() const = 0;
  // For logs and errors: "cpu", "cuda:0 (NVIDIA H200)".
  virtual std::string name() const = 0;

  // `bytes` of backend memory, 256-byte aligned, freed when the last owner
  // lets go (after the streams that use it are synchronized: the caller's
  // duty). ResourceExhausted naming the device and the size when it does not
  // fit. Not for use inside a step.
  virtual absl::StatusOr<std::shared_ptr<std::byte[]>> Allocate(size_t bytes) = 0;
  // A tensor in backend memory; its contents are undefined.
  absl::StatusOr<Tensor> AllocateTensor(DType dtype, std::vector<int64_t> shape);

  // A checkpoint weight copied into backend memory in the dtype this
  // backend's op set takes for `use` (each backend's header says which),
  // complete when this returns. `w` is only read during the call. Errors
  // name the tensor: a dtype or shape the op set cannot take for that use
  // (e.g. an FP8 weight on a GPU without a block-scaled FP8 product), or
  // memory. At start-up only, like Allocate.
  virtual absl::StatusOr<Tensor> LoadWeight(const HostWeight& w, WeightUse use) = 0;

  virtual std::unique_ptr<Stream> CreateStream() = 0;
  virtual std::unique_ptr<Event> CreateEvent() = 0;
  // The op set, queueing its work on `stream`, which must outlive it.
  virtual std::unique_ptr<Ops> CreateOps(Stream& stream) = 0;

  // Whether host code may read this backend's memory directly (the CPU
  // backend: its memory is host memory). Host-staged collectives use it.
  virtual bool host_accessible() const = 0;

  // Calls to Allocate so far.
  virtual int64_t allocations() const = 0;
};

}  // namespace moeserve

#endif  // MOESERVE_KERNELS_BACKEND_H_
