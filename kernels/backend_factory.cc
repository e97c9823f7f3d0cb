#include "kernels/backend_factory.h"

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"

#ifdef MOESERVE_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace moeserve {

bool BuiltWithCuda() {
#ifdef MOESERVE_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const DeviceId& device) {
  if (device.kind == DeviceKind::kCpu) return CreateCpuBackend();
#ifdef MOESERVE_HAVE_CUDA
  return cuda::CreateCudaBackend(device.index);
#else
  return absl::FailedPreconditionError(
      absl::StrCat("device ", device.ToString(),
                   ": this build of moeserve has no CUDA backend (nvcc was not found when it "
                   "was configured; rebuild with -DMOESERVE_CUDA=ON on a machine with the CUDA "
                   "toolkit)"));
#endif
}

}  // namespace moeserve
