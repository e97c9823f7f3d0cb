// What the CUDA runtime sees on this machine. Tests that need a GPU ask here
// and skip with the returned reason when there is none.
#ifndef MOESERVE_KERNELS_CUDA_DEVICE_INFO_H_
#define MOESERVE_KERNELS_CUDA_DEVICE_INFO_H_

#include <string>

namespace moeserve::cuda {

struct DeviceInfo {
  int device_count = 0;
  std::string name;            // of device 0
  int compute_capability = 0;  // e.g. 90 for H100/H200
  size_t total_memory_bytes = 0;
  std::string unavailable_reason;  // set when device_count == 0
};

DeviceInfo QueryDevices();

}  // namespace moeserve::cuda

#endif  // MOESERVE_KERNELS_CUDA_DEVICE_INFO_H_
