#include "kernels/cuda/cuda_check.h"

#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_status.h"

namespace moeserve::cuda {

void FailCuda(cudaError_t err, const char* call, const char* file, int line) {
  std::fprintf(stderr, "moeserve cuda ops: %s failed at %s:%d: %s (%s)\n", call, file, line,
               cudaGetErrorName(err), cudaGetErrorString(err));
  std::abort();
}

void FailCublas(cublasStatus_t status, const char* call, const char* file, int line) {
  std::fprintf(stderr, "moeserve cuda ops: %s failed at %s:%d: %s (%s)\n", call, file, line,
               cublasLtGetStatusName(status), cublasLtGetStatusString(status));
  std::abort();
}

void Require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "moeserve cuda ops: contract violated: %s\n", what);
  std::abort();
}

std::string DescribeDeviceErrors(uint32_t bits) {
  struct Name {
    uint32_t bit;
    const char* text;
  };
  static constexpr Name kNames[] = {
      {kErrTokenOutsideVocab, "token id outside the vocabulary"},
      {kErrRowOutsideMatrix, "row index outside the matrix"},
      {kErrExpertOutsideRange, "expert id outside [0, num_experts)"},
      {kErrPositionNegative, "negative position"},
      {kErrBadSlotTable,
       "MoE slot table: a replica count outside [1, max_replicas] or a slot outside the group"},
      {kErrCacheSlotOutsideCache, "KV cache write: a token's slot is past the cache's last block"},
  };
  std::string out;
  for (const Name& n : kNames) {
    if ((bits & n.bit) == 0) continue;
    if (!out.empty()) out += "; ";
    out += n.text;
  }
  return out.empty() ? absl::StrCat("unknown device error bits ", bits) : out;
}

absl::Status CudaStatus(cudaError_t err, absl::string_view what) {
  if (err == cudaSuccess) return absl::OkStatus();
  const std::string msg =
      absl::StrCat(what, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
  switch (err) {
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(msg);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
      return absl::UnavailableError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::Status CublasStatus(cublasStatus_t status, absl::string_view what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  const std::string msg = absl::StrCat(what, ": ", cublasLtGetStatusName(status), " (",
                                       cublasLtGetStatusString(status), ")");
  if (status == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(msg);
  if (status == CUBLAS_STATUS_NOT_INITIALIZED) return absl::UnavailableError(msg);
  return absl::InternalError(msg);
}

}  // namespace moeserve::cuda
