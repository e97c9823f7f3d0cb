// absl::Status from CUDA and cuBLAS return codes, for the calls that may fail
// for reasons outside the program (no device, out of memory at load time).
#ifndef MOESERVE_KERNELS_CUDA_CUDA_STATUS_H_
#define MOESERVE_KERNELS_CUDA_CUDA_STATUS_H_

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace moeserve::cuda {

// OK for cudaSuccess; otherwise ResourceExhausted for out-of-memory,
// Unavailable for a missing or unusable device, Internal for the rest, with
// `what` and CUDA's error name and string in the message.
absl::Status CudaStatus(cudaError_t err, absl::string_view what);
absl::Status CublasStatus(cublasStatus_t status, absl::string_view what);

}  // namespace moeserve::cuda

#endif  // MOESERVE_KERNELS_CUDA_CUDA_STATUS_H_
