// Makes the backend of a device: the CPU backend for "cpu", the CUDA backend
// for "cuda:N" when this build has CUDA. Errors name the device and what is
// missing (no CUDA in this build, no such device, no driver).
#ifndef MOESERVE_KERNELS_BACKEND_FACTORY_H_
#define MOESERVE_KERNELS_BACKEND_FACTORY_H_

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace moeserve {

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const DeviceId& device);

// Whether this build can drive CUDA devices at all.
bool BuiltWithCuda();

}  // namespace moeserve

#endif  // MOESERVE_KERNELS_BACKEND_FACTORY_H_
