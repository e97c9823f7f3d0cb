// Launchers that turn float32 activations into GEMM operands: bf16 copies,
// and FP8 e4m3 codes with DeepSeek's per-token, per-128-channel scales laid
// out as cuBLASLt's VEC128_32F mode reads them.
//
// FP8 activation layout for a matrix of `rows` x `cols` split into groups of
// consecutive rows (one group per expert; one group for a plain Linear):
//   codes   row r at codes + r * ld (ld >= cols, a multiple of 16; columns
//           past cols are zero)
//   scales  group g (rows [o_g, o_g + n_g)) owns scales[Kb * o_g, Kb * (o_g +
//           n_g)), token-major inside: the scale of row r, channel block kb
//           is scales[Kb * o_g + kb * n_g + (r - o_g)], Kb = ceil(cols / 128).
// so that rows [o_g, o_g + n_g) with scales + Kb * o_g form a complete
// cuBLASLt operand of n_g columns. Every n_g must be a multiple of 4 (16-byte
// aligned scale vectors).
//
// Quantization (DeepSeek's act_quant): s = amax(|x| over the 128 channels) /
// 448, code = e4m3(x / s) rounded to nearest even and saturated; s = 1 when
// the block is all zeros (DeepSeek's would divide by zero).
#ifndef MOESERVE_KERNELS_CUDA_QUANTIZE_H_
#define MOESERVE_KERNELS_CUDA_QUANTIZE_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace moeserve::cuda {

// out[r, c] = bf16(x[r, c]) (nearest even) for r < rows, c < cols.
void LaunchToBf16(const float* x, int64_t x_stride, int64_t rows, int64_t cols, uint16_t* out,
                  int64_t ld, cudaStream_t stream);

// Quantizes rows [0, rows): rows below x_rows read x, the others are zero
// padding (codes 0, scale 1). `group_offsets` (device, num_groups + 1
// entries, ending at rows) splits the rows into groups; null means one group.
void LaunchQuantizeFp8(const float* x, int64_t x_stride, int64_t x_rows, int64_t rows, int64_t cols,
                       uint8_t* codes, int64_t ld, float* scales, const int32_t* group_offsets,
                       int64_t num_groups, cudaStream_t stream);

// Inverse of the above, to float32 [rows, cols] (for the fallback product
// when cuBLASLt has no block-scaled algorithm for a shape).
void LaunchDequantizeFp8Activations(const uint8_t* codes, int64_t ld, const float* scales,
                                    int64_t rows, int64_t cols, const int32_t* group_offsets,
                                    int64_t num_groups, float* out, cudaStream_t stream);

// w[r, c] = code[r, c] * scale[r / 128, c / 128] to float32 [rows, cols];
// scales row-major with `scale_pitch` floats per row.
void LaunchDequantizeFp8Weight(const uint8_t* codes, const float* scales, int64_t scale_pitch,
                               int64_t rows, int64_t cols, float* out, cudaStream_t stream);

}  // namespace moeserve::cuda

#endif  // MOESERVE_KERNELS_CUDA_QUANTIZE_H_
