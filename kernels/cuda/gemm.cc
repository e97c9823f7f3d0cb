#include "kernels/cuda/gemm.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_tensor.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/quantize.h"

// The block-scaled FP8 modes (CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F,
// _BLK128x128_32F) came with cuBLAS 12.9 (CUDA 12.9); CMakeLists.txt checks
// the toolkit too.
#if !defined(CUBLAS_VERSION) || CUBLAS_VERSION < 120900
#error "moeserve's CUDA backend needs cuBLAS 12.9 or newer (block-scaled FP8 products)"
#endif

namespace moeserve::cuda {
namespace {

int64_t RoundUp(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

// The largest power of two (at most 256) dividing the address: what
// cuBLASLt may assume about a buffer (its default assumption is 256).
uint32_t AlignmentOf(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && v % a != 0) a /= 2;
  return a;
}

// A view's leading dimension as BLAS wants it: >= cols even for one row.
int64_t LeadingDim(int64_t rows, int64_t cols, int64_t stride) {
  return rows <= 1 ? std::max<int64_t>({stride, cols, 1}) : stride;
}

size_t ElementBytes(DType dtype) { return dtype == DType::kF8E4M3 ? 1 : DTypeSize(dtype); }

cudaDataType_t CudaType(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF8E4M3:
      return CUDA_R_8F_E4M3;
    default:
      return CUDA_R_32F;
  }
}

template <class T>
void SetDesc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const T& value) {
  MOESERVE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(value)));
}

cublasLtMatrixLayout_t MakeLayout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld,
                                  int64_t batch, int64_t stride) {
  cublasLtMatrixLayout_t layout = nullptr;
  MOESERVE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, static_cast<uint64_t>(rows),
                                                   static_cast<uint64_t>(cols), ld));
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    MOESERVE_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
        layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
    MOESERVE_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
        layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
  return layout;
}

void SetScalePointers(cublasLtMatmulDesc_t desc, const MatmulArgs& args) {
  if (args.a_scale != nullptr) SetDesc(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, args.a_scale);
  if (args.b_scale != nullptr) SetDesc(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, args.b_scale);
}

}  // namespace

GemmInput GemmInput::Rows(int64_t begin, int64_t count) const {
  GemmInput out = *this;
  const size_t bytes = weight_dtype == DType::kF32 ? 4 : ElementBytes(weight_dtype);
  out.data = static_cast<const char*>(data) + static_cast<size_t>(begin * ld) * bytes;
  if (scales != nullptr) out.scales = scales + CeilDiv(cols, kFp8Block) * begin;
  out.rows = count;
  out.valid_rows = count;
  return out;
}

absl::StatusOr<std::unique_ptr<GemmRunner>> GemmRunner::Create(cudaStream_t stream,
                                                               size_t workspace_bytes) {
  cublasLtHandle_t handle = nullptr;
  if (absl::Status s = CublasStatus(cublasLtCreate(&handle), "cublasLtCreate"); !s.ok()) return s;
  void* workspace = nullptr;
  if (absl::Status s = CudaStatus(cudaMalloc(&workspace, workspace_bytes), "cuBLASLt workspace");
      !s.ok()) {
    cublasLtDestroy(handle);
    return s;
  }
  return std::unique_ptr<GemmRunner>(new GemmRunner(stream, handle, workspace, workspace_bytes));
}

GemmRunner::GemmRunner(cudaStream_t stream, cublasLtHandle_t handle, void* workspace, size_t bytes)
    : stream_(stream),
      handle_(handle),
      workspace_(workspace),
      workspace_bytes_(bytes),
      input_(stream),
      output_(stream) {}

GemmRunner::~GemmRunner() {
  for (auto& [key, plan] : plans_) DestroyPlan(plan);
  (void)cudaStreamSynchronize(stream_);
  (void)cudaFree(workspace_);
  cublasLtDestroy(handle_);
}

GemmRunner::Plan& GemmRunner::PlanFor(const MatmulArgs& a) {
  const uint32_t align_a = AlignmentOf(a.a), align_b = AlignmentOf(a.b), align_d = AlignmentOf(a.d);
  // clang-format off
  const Key key = {a.trans_a, a.trans_b, a.m, a.n, a.k,
                   a.a_type, a.lda, a.stride_a, a.b_type, a.ldb, a.stride_b,
                   a.ldd, a.stride_d, a.batch,
                   a.a_scale_mode, a.b_scale_mode, a.a_scale != nullptr, a.b_scale != nullptr,
                   align_a, align_b, align_d};
  // clang-format on
  auto [it, inserted] = plans_.try_emplace(key);
  Plan& plan = it->second;
  if (inserted) BuildPlan(handle_, a, workspace_bytes_, plan);
  return plan;
}

void GemmRunner::DestroyPlan(Plan& plan) {
  if (plan.a != nullptr) cublasLtMatrixLayoutDestroy(plan.a);
  if (plan.b != nullptr) cublasLtMatrixLayoutDestroy(plan.b);
  if (plan.d != nullptr) cublasLtMatrixLayoutDestroy(plan.d);
  if (plan.desc != nullptr) cublasLtMatmulDescDestroy(plan.desc);
  plan = Plan{};
}

void GemmRunner::BuildPlan(cublasLtHandle_t handle, const MatmulArgs& a, size_t workspace_bytes,
                           Plan& plan) {
  const uint32_t align_a = AlignmentOf(a.a), align_b = AlignmentOf(a.b), align_d = AlignmentOf(a.d);
  MOESERVE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const int32_t ta = a.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int32_t tb = a.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  SetDesc(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, ta);
  SetDesc(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, tb);
  if (a.a_scale != nullptr) {
    SetDesc(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, static_cast<int32_t>(a.a_scale_mode));
  }
  if (a.b_scale != nullptr) {
    SetDesc(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, static_cast<int32_t>(a.b_scale_mode));
  }
  SetScalePointers(plan.desc, a);
  plan.a = MakeLayout(a.a_type, a.trans_a ? a.k : a.m, a.trans_a ? a.m : a.k, a.lda, a.batch,
                      a.stride_a);
  plan.b = MakeLayout(a.b_type, a.trans_b ? a.n : a.k, a.trans_b ? a.k : a.n, a.ldb, a.batch,
                      a.stride_b);
  plan.d = MakeLayout(CUDA_R_32F, a.m, a.n, a.ldd, a.batch, a.stride_d);

  cublasLtMatmulPreference_t pref = nullptr;
  MOESERVE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_bytes;
  MOESERVE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  const struct {
    cublasLtMatmulPreferenceAttributes_t attr;
    uint32_t value;
  } alignments[] = {{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a},
                    {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_b},
                    {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_d},
                    {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_d}};
  for (const auto& al : alignments) {
    MOESERVE_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref, al.attr, &al.value, sizeof(al.value)));
  }
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  // An unsupported combination makes the query itself fail: that is "no
  // algorithm", not an error.
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
      handle, plan.desc, plan.a, plan.b, plan.d, plan.d, pref, 1, &result, &returned);
  cublasLtMatmulPreferenceDestroy(pref);
  plan.found = status == CUBLAS_STATUS_SUCCESS && returned > 0;
  if (plan.found) plan.algo = result.algo;
}

bool GemmRunner::TryMatmul(const MatmulArgs& args) {
  if (args.m == 0 || args.n == 0 || args.batch == 0) return true;
  Require(args.k > 0, "gemm: k must be positive (callers handle empty products)");
  Plan& plan = PlanFor(args);
  if (!plan.found) return false;
  SetScalePointers(plan.desc, args);
  const float alpha = 1.0f, beta = 0.0f;
  const cublasStatus_t status =
      cublasLtMatmul(handle_, plan.desc, &alpha, args.a, plan.a, args.b, plan.b, &beta, args.d,
                     plan.d, args.d, plan.d, &plan.algo, workspace_, workspace_bytes_, stream_);
  // A configuration the heuristic offered but the launch refuses (possible
  // with the block-scaled modes) counts as "no algorithm": the caller tries
  // its next layout.
  if (status == CUBLAS_STATUS_NOT_SUPPORTED || status == CUBLAS_STATUS_INVALID_VALUE) {
    std::fprintf(stderr, "moeserve cuda ops: cublasLtMatmul refused m=%lld n=%lld k=%lld (%s)\n",
                 static_cast<long long>(args.m), static_cast<long long>(args.n),
                 static_cast<long long>(args.k), cublasLtGetStatusName(status));
    plan.found = false;
    return false;
  }
  MOESERVE_CUBLAS_CHECK(status);
  ++stats_.matmuls;
  return true;
}

void GemmRunner::Matmul(const MatmulArgs& args, const char* what) {
  if (TryMatmul(args)) return;
  std::fprintf(stderr,
               "moeserve cuda ops: cuBLASLt has no algorithm for %s: m=%lld n=%lld k=%lld "
               "types a=%d b=%d lda=%lld ldb=%lld ldd=%lld batch=%lld\n",
               what, static_cast<long long>(args.m), static_cast<long long>(args.n),
               static_cast<long long>(args.k), static_cast<int>(args.a_type),
               static_cast<int>(args.b_type), static_cast<long long>(args.lda),
               static_cast<long long>(args.ldb), static_cast<long long>(args.ldd),
               static_cast<long long>(args.batch));
  std::abort();
}

GemmInput GemmRunner::Prepare(ConstMatView x, DType weight_dtype) {
  GemmInput in;
  in.weight_dtype = weight_dtype;
  in.rows = in.valid_rows = x.rows;
  in.cols = x.cols;
  switch (weight_dtype) {
    case DType::kF32:
      in.data = x.data;
      in.ld = LeadingDim(x.rows, x.cols, x.stride);
      return in;
    case DType::kBF16: {
      in.ld = RoundUp(std::max<int64_t>(x.cols, 1), 8);  // 16-byte rows
      auto* out = static_cast<uint16_t*>(
          input_.Reserve(static_cast<size_t>(x.rows * in.ld) * sizeof(uint16_t)));
      LaunchToBf16(x.data, x.stride, x.rows, x.cols, out, in.ld, stream_);
      in.data = out;
      return in;
    }
    case DType::kF8E4M3: {
      in.rows = RoundUp(x.rows, 4);  // 16-byte aligned scale vectors
      in.ld = RoundUp(std::max<int64_t>(x.cols, 1), 16);
      ScratchLayout layout;
      const size_t codes = layout.Add<uint8_t>(in.rows * in.ld);
      const size_t scales = layout.Add<float>(CeilDiv(x.cols, kFp8Block) * in.rows);
      void* base = input_.Reserve(layout.bytes());
      LaunchQuantizeFp8(x.data, x.stride, x.rows, in.rows, x.cols, At<uint8_t>(base, codes), in.ld,
                        At<float>(base, scales), nullptr, 1, stream_);
      in.data = At<uint8_t>(base, codes);
      in.scales = At<float>(base, scales);
      return in;
    }
    default:
      Require(false, "gemm: weights must be F32, BF16 or F8E4M3");
  }
  return in;
}

GemmInput GemmRunner::PrepareGroupedFp8(ConstMatView x, const int32_t* device_offsets,
                                        int64_t num_groups) {
  Require(x.rows % 4 == 0, "grouped fp8: rows must be a multiple of 4");
  GemmInput in;
  in.weight_dtype = DType::kF8E4M3;
  in.rows = in.valid_rows = x.rows;
  in.cols = x.cols;
  in.ld = RoundUp(std::max<int64_t>(x.cols, 1), 16);
  ScratchLayout layout;
  const size_t codes = layout.Add<uint8_t>(in.rows * in.ld);
  const size_t scales = layout.Add<float>(CeilDiv(x.cols, kFp8Block) * in.rows);
  void* base = input_.Reserve(layout.bytes());
  LaunchQuantizeFp8(x.data, x.stride, x.rows, in.rows, x.cols, At<uint8_t>(base, codes), in.ld,
                    At<float>(base, scales), device_offsets, num_groups, stream_);
  in.data = At<uint8_t>(base, codes);
  in.scales = At<float>(base, scales);
  return in;
}

void GemmRunner::Linear(ConstMatView x, const Tensor& w, MatView y) {
  Require(!w.empty() && w.device() == Device::kCuda && w.rank() == 2,
          "linear: weight must be a 2-D device tensor");
  Require(w.dim(0) == y.cols && w.dim(1) == x.cols && x.rows == y.rows,
          "linear: weight must be [y.cols, x.cols] and x, y must have the same rows");
  if (y.rows == 0 || y.cols == 0) return;
  if (x.cols == 0) {
    MOESERVE_CUDA_CHECK(cudaMemset2DAsync(y.data, static_cast<size_t>(y.stride) * sizeof(float), 0,
                                          static_cast<size_t>(y.cols) * sizeof(float),
                                          static_cast<size_t>(y.rows), stream_));
    return;
  }
  Multiply(Prepare(x, w.dtype()), w, y);
}

void GemmRunner::Multiply(const GemmInput& in, const Tensor& w, MatView y) {
  Require(w.dtype() == in.weight_dtype, "gemm: input prepared for another weight dtype");
  Require(w.dim(1) == in.cols && w.dim(0) == y.cols && y.rows == in.valid_rows,
          "gemm: shapes of input, weight and output disagree");
  if (in.valid_rows == 0 || y.cols == 0) return;
  if (in.weight_dtype == DType::kF8E4M3) return MultiplyFp8(in, w, y);
  MatmulArgs args;
  args.trans_a = true;
  args.m = y.cols;
  args.n = in.rows;
  args.k = in.cols;
  args.a = w.raw();
  args.a_type = CudaType(w.dtype());
  args.lda = in.cols;
  args.b = in.data;
  args.b_type = args.a_type;
  args.ldb = in.ld;
  args.d = y.data;
  args.ldd = LeadingDim(y.rows, y.cols, y.stride);
  Matmul(args, in.weight_dtype == DType::kBF16 ? "bf16 linear" : "f32 linear");
}

namespace {

// The block-scaled FP8 product of an FP8 weight [n_out, k] and activations
// prepared as Prepare() does (`in`), in the operand order given; D is
// column-major [n_out x in.rows] (weight as A) or [in.rows x n_out]
// (swapped), `ldd` apart, at `d`.
MatmulArgs Fp8Args(const GemmInput& in, const void* w, const float* w_scales, int64_t n_out,
                   bool swapped, float* d, int64_t ldd) {
  MatmulArgs args;
  args.trans_a = true;
  args.k = in.cols;
  args.a_type = CUDA_R_8F_E4M3;
  args.b_type = CUDA_R_8F_E4M3;
  args.d = d;
  args.ldd = ldd;
  const cublasLtMatmulMatrixScale_t weight_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
  const cublasLtMatmulMatrixScale_t input_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  if (!swapped) {
    args.m = n_out;
    args.n = in.rows;
    args.a = w;
    args.lda = in.cols;
    args.b = in.data;
    args.ldb = in.ld;
    args.a_scale = w_scales;
    args.a_scale_mode = weight_mode;
    args.b_scale = in.scales;
    args.b_scale_mode = input_mode;
  } else {
    args.m = in.rows;
    args.n = n_out;
    args.a = in.data;
    args.lda = in.ld;
    args.b = w;
    args.ldb = in.cols;
    args.a_scale = in.scales;
    args.a_scale_mode = input_mode;
    args.b_scale = w_scales;
    args.b_scale_mode = weight_mode;
  }
  return args;
}

}  // namespace

void GemmRunner::MultiplyFp8(const GemmInput& in, const Tensor& w, MatView y) {
  const int64_t n_out = y.cols, k = in.cols;
  const float* w_scales = Fp8Scales(w);
  const size_t out_bytes = static_cast<size_t>(in.rows * n_out) * sizeof(float);
  const auto copy_rows_to_y = [&](const float* src) {
    MOESERVE_CUDA_CHECK(cudaMemcpy2DAsync(
        y.data, static_cast<size_t>(y.stride) * sizeof(float), src,
        static_cast<size_t>(n_out) * sizeof(float), static_cast<size_t>(n_out) * sizeof(float),
        static_cast<size_t>(in.valid_rows), cudaMemcpyDeviceToDevice, stream_));
  };

  // 1. Weight as A (BLK128x128 scales), activations as B (VEC128 scales),
  // into y when y holds exactly the product's rows.
  if (in.rows == in.valid_rows &&
      TryMatmul(Fp8Args(in, w.raw(), w_scales, n_out, /*swapped=*/false, y.data,
                        LeadingDim(y.rows, y.cols, y.stride)))) {
    ++stats_.fp8_direct;
    return;
  }
  // 2. The same into an aligned, dense scratch buffer, then copied into y.
  auto* scratch = static_cast<float*>(output_.Reserve(out_bytes));
  if (TryMatmul(Fp8Args(in, w.raw(), w_scales, n_out, /*swapped=*/false, scratch, n_out))) {
    copy_rows_to_y(scratch);
    ++stats_.fp8_direct;
    return;
  }
  // 3. Activations as A, weight as B: D = [tokens x out] column-major,
  // i.e. y transposed; transpose it back.
  if (TryMatmul(Fp8Args(in, w.raw(), w_scales, n_out, /*swapped=*/true, scratch, in.rows))) {
    LaunchTranspose(scratch, in.rows, n_out, in.valid_rows, y.data, y.stride, stream_);
    ++stats_.fp8_swapped;
    return;
  }
  std::fprintf(stderr,
               "moeserve cuda ops: cuBLASLt has no block-scaled FP8 algorithm for a weight "
               "[%lld, %lld] and %lld activation rows; such a weight should have been refused "
               "when it was loaded (CheckBlockScaledFp8), FP8 products are never dequantized\n",
               static_cast<long long>(n_out), static_cast<long long>(k),
               static_cast<long long>(in.rows));
  std::abort();
}

bool GemmRunner::HasBlockScaledFp8(cublasLtHandle_t handle, int64_t out, int64_t in, int64_t tokens,
                                   size_t workspace_bytes) {
  // The heuristic reads no memory: stand-in device addresses with the
  // alignment Prepare() and the scratch buffers give (256 bytes).
  const auto fake = [](uintptr_t n) { return reinterpret_cast<void*>(n << 20); };
  GemmInput x;
  x.weight_dtype = DType::kF8E4M3;
  x.rows = x.valid_rows = RoundUp(std::max<int64_t>(tokens, 1), 4);
  x.cols = in;
  x.ld = RoundUp(std::max<int64_t>(in, 1), 16);
  x.data = fake(1);
  x.scales = static_cast<const float*>(fake(2));
  const auto* w_scales = static_cast<const float*>(fake(4));
  auto* d = static_cast<float*>(fake(5));
  for (const bool swapped : {false, true}) {
    Plan plan;
    BuildPlan(handle, Fp8Args(x, fake(3), w_scales, out, swapped, d, swapped ? x.rows : out),
              workspace_bytes, plan);
    const bool found = plan.found;
    DestroyPlan(plan);
    if (found) return true;
  }
  return false;
}

absl::Status CheckBlockScaledFp8(int device, cublasLtHandle_t handle, int64_t out, int64_t in,
                                 size_t workspace_bytes) {
  // Decode (a few rows) and prefill (many) may get different kernels.
  const int64_t kTokens[] = {4, 256};
  const auto has = [&](int64_t o, int64_t i) {
    return std::all_of(std::begin(kTokens), std::end(kTokens), [&](int64_t t) {
      return GemmRunner::HasBlockScaledFp8(handle, o, i, t, workspace_bytes);
    });
  };
  if (has(out, in)) return absl::OkStatus();

  cudaDeviceProp prop{};
  (void)cudaGetDeviceProperties(&prop, device);
  const size_t v = cublasLtGetVersion();
  const std::string where =
      absl::StrCat("cuda:", device, " (", prop.name, ", compute capability ", prop.major, ".",
                   prop.minor, ", cuBLASLt ", v / 10000, ".", v / 100 % 100, ".", v % 100, ")");
  // A shape every block-scaled FP8 product supports tells the device's
  // limit apart from the weight's.
  if (!has(256, 256)) {
    return absl::FailedPreconditionError(absl::StrCat(
        where,
        " offers no block-scaled FP8 matrix product (e4m3 weights with 128x128 float32 block "
        "scales, CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F): FP8 weights need a Hopper (sm_90) "
        "or newer GPU and cuBLAS 12.9 or newer with 128x128 block scaling. moeserve does not "
        "dequantize FP8 weights per product; use a GPU and CUDA that have it, or a BF16 "
        "checkpoint"));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      where, " has no block-scaled FP8 product for an FP8 weight [", out, ",", in,
      "] (cuBLASLt needs in_features a multiple of 16); moeserve does not dequantize FP8 "
      "weights per product"));
}

}  // namespace moeserve::cuda
