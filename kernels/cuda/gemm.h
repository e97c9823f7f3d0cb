// Matrix products of the CUDA op set, through cuBLASLt.
//
// Linear(x, w, y) computes y = x w^T for float32 activations x, y and a
// device weight w [out, in] of dtype
//   F32     float32 product (CUBLAS_COMPUTE_32F, no TF32): the CPU twin's
//           arithmetic up to summation order;
//   BF16    x rounded to bf16, bf16 x bf16 products accumulated in float32;
//   F8E4M3  x quantized per token and 128 channels (quantize.h), then
//           cuBLASLt's block-scaled FP8 product: the weight's 128x128 block
//           scales in BLK128x128_32F mode, the activations' in VEC128_32F,
//           float32 accumulation and output.
// In cuBLAS' column-major terms every Linear is the "TN" product
//   y^T [out x T] = W [out x in] * x^T [in x T]
// with W as A (transposed) and x as B, which is what FP8 requires.
//
// FP8 products are always block-scaled FP8 products, never dequantized:
// when cuBLASLt has no algorithm for the output in place (a sliced or
// misaligned y), the product goes to an aligned scratch buffer and is
// copied; failing that, it runs with A and B swapped (activations as A,
// output transposed back), a real block-scaled algorithm too. stats()
// counts which order ran. A product with no algorithm in either order
// aborts naming its shape: weights must be refused before that, at load
// (CheckBlockScaledFp8, which the CUDA backend's LoadWeight calls), so that
// a worker without the algorithm (pre-Hopper GPU, cuBLAS older than 12.9,
// in_features not a multiple of 16) refuses to start instead.
//
// Not thread safe; all work is queued on the stream given at creation.
#ifndef MOESERVE_KERNELS_CUDA_GEMM_H_
#define MOESERVE_KERNELS_CUDA_GEMM_H_

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/tensor.h"

namespace moeserve::cuda {

// One product in cuBLAS' column-major terms, alpha 1 and beta 0:
//   D[m x n] = op(A)[m x k] * op(B)[k x n]
// for `batch` problems `stride_*` elements apart. A is stored [k x m] when
// transposed, else [m x k], with leading dimension lda (likewise B). D is
// float32.
struct MatmulArgs {
  bool trans_a = false;
  bool trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  cudaDataType_t a_type = CUDA_R_32F;
  int64_t lda = 0;
  int64_t stride_a = 0;
  const void* b = nullptr;
  cudaDataType_t b_type = CUDA_R_32F;
  int64_t ldb = 0;
  int64_t stride_b = 0;
  float* d = nullptr;
  int64_t ldd = 0;
  int64_t stride_d = 0;
  int64_t batch = 1;
  // FP8 only: device scales and their modes (VEC128_32F or BLK128x128_32F).
  const float* a_scale = nullptr;
  cublasLtMatmulMatrixScale_t a_scale_mode = CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
  const float* b_scale = nullptr;
  cublasLtMatmulMatrixScale_t b_scale_mode = CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
};

// Activations converted once for products with weights of one dtype (the
// gate and up projections share one). Valid until the next Prepare*().
struct GemmInput {
  DType weight_dtype = DType::kF32;
  int64_t rows = 0;               // the product's token count (FP8: a multiple of 4)
  int64_t valid_rows = 0;         // rows holding data; the rest is zero padding
  int64_t cols = 0;               // in_features
  const void* data = nullptr;     // F32: the caller's x; BF16: bf16 copy; FP8: e4m3 codes
  int64_t ld = 0;                 // elements between rows of `data`
  const float* scales = nullptr;  // FP8: VEC128 scales (quantize.h layout)

  // Rows [begin, begin + count) as an operand of its own. For FP8 `begin`
  // and `count` must be one group of the quantization (quantize.h).
  GemmInput Rows(int64_t begin, int64_t count) const;
};

class GemmRunner {
 public:
  static absl::StatusOr<std::unique_ptr<GemmRunner>> Create(cudaStream_t stream,
                                                            size_t workspace_bytes);
  ~GemmRunner();
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  // y = x w^T; w [y.cols, x.cols] on the device, F32, BF16 or F8E4M3.
  void Linear(ConstMatView x, const Tensor& w, MatView y);

  GemmInput Prepare(ConstMatView x, DType weight_dtype);
  // FP8 quantization of x in groups: `device_offsets` (num_groups + 1
  // entries, each group a multiple of 4 rows, the last == x.rows).
  GemmInput PrepareGroupedFp8(ConstMatView x, const int32_t* device_offsets, int64_t num_groups);
  // y = in w^T; y.rows == in.valid_rows.
  void Multiply(const GemmInput& in, const Tensor& w, MatView y);

  // False when cuBLASLt has no algorithm for the problem (nothing queued).
  bool TryMatmul(const MatmulArgs& args);
  // Aborts, naming `what` and the shape, when there is no algorithm.
  void Matmul(const MatmulArgs& args, const char* what);

  struct Stats {
    int64_t matmuls = 0;
    int64_t fp8_direct = 0;   // block-scaled FP8, weight as A
    int64_t fp8_swapped = 0;  // block-scaled FP8, activations as A
  };
  const Stats& stats() const { return stats_; }

  // Whether cuBLASLt (through `handle`, on the current device) offers a
  // block-scaled FP8 algorithm, in either operand order, for y = x w^T with
  // an FP8 weight [out, in] laid out as device_tensor.h says and `tokens`
  // rows of activations prepared as Prepare() does. Queues nothing.
  static bool HasBlockScaledFp8(cublasLtHandle_t handle, int64_t out, int64_t in, int64_t tokens,
                                size_t workspace_bytes);

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool found = false;  // cuBLASLt has an algorithm
  };
  using Key = std::array<int64_t, 21>;

  GemmRunner(cudaStream_t stream, cublasLtHandle_t handle, void* workspace, size_t bytes);
  // Describes `args` to cuBLASLt and asks for its best algorithm.
  static void BuildPlan(cublasLtHandle_t handle, const MatmulArgs& args, size_t workspace_bytes,
                        Plan& plan);
  static void DestroyPlan(Plan& plan);
  Plan& PlanFor(const MatmulArgs& args);
  void MultiplyFp8(const GemmInput& in, const Tensor& w, MatView y);

  cudaStream_t stream_;
  cublasLtHandle_t handle_;
  void* workspace_;  // cuBLASLt's, workspace_bytes_ long
  size_t workspace_bytes_;
  std::map<Key, Plan> plans_;  // by shape, types, strides and alignments
  DeviceBuffer input_;         // Prepare*()'s converted activations
  DeviceBuffer output_;        // padded or transposed products before the copy into y
  Stats stats_;
};

// OK when `device` (current) can multiply FP8 weights [out, in] by the
// block-scaled FP8 product (GemmRunner::HasBlockScaledFp8 at a few token
// counts). Otherwise FailedPrecondition naming the device, its compute
// capability and the cuBLASLt version, and what is needed: for a device
// with no such product at all, a Hopper (sm_90) or newer GPU and cuBLAS
// 12.9 or newer with 128x128 block scaling; for a shape without one,
// in_features a multiple of 16.
absl::Status CheckBlockScaledFp8(int device, cublasLtHandle_t handle, int64_t out, int64_t in,
                                 size_t workspace_bytes);

}  // namespace moeserve::cuda

#endif  // MOESERVE_KERNELS_CUDA_GEMM_H_
