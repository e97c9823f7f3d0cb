// The CUDA backend (kernels/backend.h): device memory from cudaMalloc,
// streams over non-blocking cudaStream_t, events, graphs from stream capture,
// and the CUDA op set (cuda_ops.h) queueing on a given stream.
//
// Semantics next to the CPU twin (kernels/cpu/cpu_stream.h):
//  - Failures. CUDA work cannot fail a stream by itself; what can fail is a
//    host function (cudaLaunchHostFunc cannot carry a status back to CUDA)
//    and the queueing calls (a bad pointer, a lost device). Each stream keeps
//    the first such failure, sticky; Synchronize returns it, or the CUDA
//    error of the queued work. Host functions queued after a failure are
//    skipped; kernels and copies are not (the driver does not know), so
//    their results after a failure are undefined. A stream that waited on an
//    event of a stream that failed before the event's point reports that
//    failure from Synchronize (checked when synchronizing, not when running).
//  - Capture uses cudaStreamCaptureModeThreadLocal. Event waits and records
//    are refused while capturing, as on the CPU (EndCapture fails). Host
//    functions inside a graph report to the stream that launches it (a host
//    function queued after the graph on that stream carries the failure
//    over). A graph must outlive its launches' completion.
//  - times() are not measured (measured = false).
//  - Devices: every call sets the backend's device first, so several
//    backends of one process (one per GPU) do not step on each other.
//  - Weights (LoadWeight), in the checkpoint's dtype wherever the op set
//    takes it, never dequantized to float32 for a product:
//      kMatrix     F32 stays F32, BF16 stays BF16, F8_E4M3 stays FP8 with
//                  its 128x128 block scales (device_tensor.h layout), after
//                  CheckBlockScaledFp8 (gemm.h) for the device and shape:
//                  without cuBLASLt's block-scaled FP8 product the load
//                  fails, naming the device, its compute capability and
//                  the cuBLAS version. Other block sizes are refused.
//      kEmbedding  BF16 stays BF16, F32 stays F32, FP8 dequantized to F32.
//      kVector     F32 (BF16/FP8 widened): the routing bias must be F32.
//      kMlaKvB     BF16 (FP8 dequantized at load, then rounded), F32 stays
//                  F32: the MLA ops read F32 or BF16 parts of it.
//    The copy is complete when LoadWeight returns.
#ifndef MOESERVE_KERNELS_CUDA_CUDA_BACKEND_H_
#define MOESERVE_KERNELS_CUDA_CUDA_BACKEND_H_

#include <cuda_runtime_api.h>

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace moeserve::cuda {

// The backend of CUDA device `device`. Unavailable when there is no device
// or driver (with the driver's error text), InvalidArgument when the index is
// outside the visible devices; each naming "cuda:N".
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device);

// The cudaStream_t under a stream of a CUDA backend (for communicators and
// the op set); null for any other stream.
cudaStream_t NativeStream(Stream& stream);

}  // namespace moeserve::cuda

#endif  // MOESERVE_KERNELS_CUDA_CUDA_BACKEND_H_
