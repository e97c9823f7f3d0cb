// How the CUDA backend reports failures.
//
// Inside an op (whose interface is void) a failing CUDA or cuBLAS call, or a
// caller breaking the op's shape contract, is a broken invariant: the process
// aborts with the call, the error string and the source line, as the CPU
// backend's Require() does. Calls that can fail for reasons outside the
// program (allocation at load time, no device) return absl::Status instead:
// see cuda_status.h.
//
// Kernels cannot abort the host. They report a contract violation that only
// the device can see (a token id outside the vocabulary, a row index outside
// a matrix) by setting a bit of the op set's error word; CudaOps::Synchronize()
// reads it and aborts with the names of the violated contracts.
#ifndef MOESERVE_KERNELS_CUDA_CUDA_CHECK_H_
#define MOESERVE_KERNELS_CUDA_CUDA_CHECK_H_

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

namespace moeserve::cuda {

[[noreturn]] void FailCuda(cudaError_t err, const char* call, const char* file, int line);
[[noreturn]] void FailCublas(cublasStatus_t status, const char* call, const char* file, int line);

inline void CheckCuda(cudaError_t err, const char* call, const char* file, int line) {
  if (err != cudaSuccess) FailCuda(err, call, file, line);
}
inline void CheckCublas(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS) FailCublas(status, call, file, line);
}

// Aborts with `what` on stderr when `ok` is false: a caller broke an op's
// contract (shapes, dtypes, devices).
void Require(bool ok, const char* what);

// Bits of the device error word (one per contract only a kernel can check).
enum DeviceError : uint32_t {
  kErrTokenOutsideVocab = 1u << 0,
  kErrRowOutsideMatrix = 1u << 1,
  kErrExpertOutsideRange = 1u << 2,
  kErrPositionNegative = 1u << 3,
  kErrBadSlotTable = 1u << 4,  // MoeSlotTable: replica count or slot out of range
  kErrCacheSlotOutsideCache = 1u << 5,  // SeqTable::slots: a slot past the cache's rows
};
// "token id outside the vocabulary; ..." for the bits set in `bits`.
std::string DescribeDeviceErrors(uint32_t bits);

}  // namespace moeserve::cuda

// The call's text goes into the message, hence macros (no control flow).
#define MOESERVE_CUDA_CHECK(call) ::moeserve::cuda::CheckCuda((call), #call, __FILE__, __LINE__)
#define MOESERVE_CUBLAS_CHECK(call) ::moeserve::cuda::CheckCublas((call), #call, __FILE__, __LINE__)
// After a kernel launch: a bad configuration shows up here, not later.
#define MOESERVE_CUDA_CHECK_LAUNCH() \
  ::moeserve::cuda::CheckCuda(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

#endif  // MOESERVE_KERNELS_CUDA_CUDA_CHECK_H_
