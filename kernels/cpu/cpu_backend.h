// The CPU backend: host memory, CPU streams (kernels/cpu/cpu_stream.h) and
// the reference op set queued on them. The twin of the CUDA backend in
// execution model, so the engine code that runs on a GPU runs here in every
// test.
//
// Weights (LoadWeight): float32 host tensors for every use, bit for bit what
// Checkpoint::ReadF32 gives (HostWeightToF32: BF16 widened, FP8 dequantized
// with its block scales).
#ifndef MOESERVE_KERNELS_CPU_CPU_BACKEND_H_
#define MOESERVE_KERNELS_CPU_CPU_BACKEND_H_

#include <chrono>
#include <memory>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_stream.h"

namespace moeserve {

struct CpuBackendOptions {
  cpu::CpuStreamOptions stream;  // for every stream this backend creates
  // For tests: the n-th stream created waits delays[n] (the last entry for
  // later ones) before each piece of work, instead of stream.delay_per_item.
  // A model creates its compute stream, then its communication stream.
  std::vector<std::chrono::microseconds> stream_delays;
  // The op set that runs on the streams' threads; default: the reference.
  // Shared by every op set the backend creates (one stream at a time uses
  // it in a model: the compute stream).
  std::shared_ptr<Ops> ops;
  // Fill every allocation with NaN bit patterns (0xff bytes) so that a read
  // of memory nothing wrote shows up in the results. For tests.
  bool poison_allocations = false;
};

std::unique_ptr<Backend> CreateCpuBackend(const CpuBackendOptions& options = {});

// The CPU op set queueing its work on `stream` (a CPU stream). Host
// descriptors are copied when an op is queued; memory is read when it runs.
// `inner` (default: the reference CPU op set) is what runs on the stream's
// thread, e.g. a profiling wrapper in a benchmark.
std::unique_ptr<Ops> CreateCpuStreamOps(Stream& stream, std::shared_ptr<Ops> inner = nullptr);

}  // namespace moeserve

#endif  // MOESERVE_KERNELS_CPU_CPU_BACKEND_H_
