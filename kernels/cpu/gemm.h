// Single-precision matrix products on strided views, through OpenBLAS.
// The one place in the CPU backend that calls cblas, so the BLAS header and
// its conventions (leading dimensions, transposes) stay here.
#ifndef MOESERVE_KERNELS_CPU_GEMM_H_
#define MOESERVE_KERNELS_CPU_GEMM_H_

#include "kernels/tensor.h"

namespace moeserve::cpu {

// c = a * b^T + beta * c.  a: [M, K], b: [N, K], c: [M, N].
// Views may be column slices of wider buffers (any row stride >= cols).
// With beta == 0 the old contents of c are ignored (may be uninitialised).
void GemmNT(ConstMatView a, ConstMatView b, MatView c, float beta = 0.0f);

// c = a * b + beta * c.  a: [M, K], b: [K, N], c: [M, N].
void GemmNN(ConstMatView a, ConstMatView b, MatView c, float beta = 0.0f);

}  // namespace moeserve::cpu

#endif  // MOESERVE_KERNELS_CPU_GEMM_H_
