#include "kernels/cpu/gemm.h"

#include <cblas.h>

#include <algorithm>

#include "kernels/cpu/cpu_ops_impl.h"

namespace moeserve::cpu {
namespace {

// BLAS wants a leading dimension >= max(1, cols) even where it never steps to
// a second row; a single-row view may carry any stride.
blasint LeadingDim(ConstMatView v) {
  return static_cast<blasint>(std::max<int64_t>({v.stride, v.cols, 1}));
}

// K == 0: the product is empty, so c = beta * c (BLAS would also reject the
// zero leading dimensions some callers pass for empty operands).
void ScaleOnly(MatView c, float beta) {
  for (int64_t r = 0; r < c.rows; ++r) {
    float* row = c.row(r);
    for (int64_t j = 0; j < c.cols; ++j) row[j] = beta == 0.0f ? 0.0f : beta * row[j];
  }
}

void Gemm(ConstMatView a, ConstMatView b, bool transpose_b, MatView c, float beta) {
  RequireView(a, "gemm a");
  RequireView(b, "gemm b");
  RequireView(c, "gemm c");
  const int64_t m = c.rows, n = c.cols, k = a.cols;
  Require(a.rows == m, "gemm: a.rows != c.rows");
  Require(transpose_b ? (b.rows == n && b.cols == k) : (b.rows == k && b.cols == n),
          "gemm: b does not match a and c");
  if (m == 0 || n == 0) return;
  if (k == 0) return ScaleOnly(c, beta);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, transpose_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), 1.0f,
              a.data, LeadingDim(a), b.data, LeadingDim(b), beta, c.data, LeadingDim(c));
}

}  // namespace

void GemmNT(ConstMatView a, ConstMatView b, MatView c, float beta) {
  Gemm(a, b, /*transpose_b=*/true, c, beta);
}

void GemmNN(ConstMatView a, ConstMatView b, MatView c, float beta) {
  Gemm(a, b, /*transpose_b=*/false, c, beta);
}

}  // namespace moeserve::cpu
