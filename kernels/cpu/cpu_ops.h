// The CPU op set: the reference implementation every other backend is tested
// against. Float32 throughout; matrix products through OpenBLAS.
#ifndef MOESERVE_KERNELS_CPU_CPU_OPS_H_
#define MOESERVE_KERNELS_CPU_CPU_OPS_H_

#include <memory>

#include "kernels/ops.h"

namespace moeserve {

std::unique_ptr<Ops> CreateCpuOps();

}  // namespace moeserve

#endif  // MOESERVE_KERNELS_CPU_CPU_OPS_H_
