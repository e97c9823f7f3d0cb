// An op set that does nothing, for planning a step's workspace: the engine
// runs its forward pass once with it over a workspace that only measures
// (kernels/workspace.h), touching no memory.
#ifndef MOESERVE_KERNELS_NULL_OPS_H_
#define MOESERVE_KERNELS_NULL_OPS_H_

#include <memory>

#include "kernels/ops.h"

namespace moeserve {

std::unique_ptr<Ops> CreateNullOps();

}  // namespace moeserve

#endif  // MOESERVE_KERNELS_NULL_OPS_H_
