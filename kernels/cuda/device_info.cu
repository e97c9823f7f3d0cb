#include <cuda_runtime.h>

#include "kernels/cuda/device_info.h"

namespace moeserve::cuda {

DeviceInfo QueryDevices() {
  DeviceInfo info;
  cudaError_t err = cudaGetDeviceCount(&info.device_count);
  if (err != cudaSuccess || info.device_count == 0) {
    info.device_count = 0;
    info.unavailable_reason = err != cudaSuccess
                                  ? std::string("CUDA runtime: ") + cudaGetErrorString(err)
                                  : std::string("no CUDA device visible");
    return info;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
    info.name = prop.name;
    info.compute_capability = prop.major * 10 + prop.minor;
    info.total_memory_bytes = prop.totalGlobalMem;
  }
  return info;
}

}  // namespace moeserve::cuda
