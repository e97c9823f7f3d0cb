// The dtype of the paged KV cache and the byte layout of one token row.
//
// A cache row holds `width` logical float values per token and layer (MLA:
// [kv_lora_rank latent | rope key]; GQA: [kv_heads * head_dim keys |
// kv_heads * head_dim values]). Stored as:
//
//   kF32      width float32 values (4 * width bytes): exact.
//   kBF16     width bf16 values (2 * width bytes), rounded to nearest even.
//   kFP8E4M3  [quantized_cols e4m3 codes][pad to 4][num_tiles float32 scales]
//             [width - quantized_cols bf16 values][pad to 4]
//
// FP8: the leading `quantized_cols` values are quantized in tiles of `tile`
// values (the last tile may be partial), each with its own float32 scale
// scale = amax(|tile|) / 448 and codes e4m3(x / scale) (round to nearest
// even, e4m3fn, saturating at +-448; a tile of zeros has scale 0 and zero
// codes). The value read back is float(code) * scale. The trailing columns
// stay bf16, unquantized. Rows are padded to a multiple of 4 bytes so every
// row's scales are 4-byte aligned.
//
// For DeepSeek-V3's MLA (quantized_cols = kv_lora_rank = 512, tile = 128,
// rope key 64) this is the FP8 layout of FlashMLA as DeepSeek stores it for
// V3.2, 656 bytes per token: bytes [0, 512) the e4m3 latent, [512, 528) four
// float32 scales (tile i covers latent values [128 i, 128 i + 128)),
// [528, 656) the 64 bf16 rope-key values. For GQA the whole row is quantized
// (quantized_cols = width) in tiles of head_dim: one float32 scale per
// (token, KV head, K or V), scales ordered K head 0..kv_heads-1 then V heads.
//
// Rounding bounds (unit roundoff u = 2^-p of a p-bit significand):
//   bf16 (p = 8): |x' - x| <= 2^-8 |x|.
//   e4m3 (p = 4): |x' - x| <= 2^-4 |x| + 2^-10 * scale for a value of a
//     tile with scale = amax / 448 (the second term covers e4m3 subnormals,
//     spaced 2^-9 apart, below 2^-6), plus float32 rounding of x / scale and
//     code * scale (2 * 2^-24 relative, negligible). Trailing bf16 columns
//     as bf16.
#ifndef MOESERVE_KERNELS_KV_CACHE_LAYOUT_H_
#define MOESERVE_KERNELS_KV_CACHE_LAYOUT_H_

#include <cstdint>
#include <string_view>

namespace moeserve {

enum class KvCacheDtype : uint8_t { kF32, kBF16, kFP8E4M3 };

// "fp32", "bf16", "fp8" (the words of --kv-cache-dtype).
std::string_view KvCacheDtypeName(KvCacheDtype dtype);

// Values per float32 scale of an MLA latent in FP8 (FlashMLA's tile).
inline constexpr int64_t kKvFp8MlaTile = 128;

// One token row of one layer. A plain value; valid() says whether its
// fields make sense (the byte offsets are only meaningful then).
struct KvRowLayout {
  KvCacheDtype dtype = KvCacheDtype::kF32;
  int64_t width = 0;           // logical float values per token
  int64_t quantized_cols = 0;  // FP8: leading columns stored as e4m3; the rest bf16
  int64_t tile = 0;            // FP8: quantized values per float32 scale

  bool valid() const;
  int64_t num_tiles() const;      // FP8: ceil(quantized_cols / tile); else 0
  int64_t scales_offset() const;  // FP8: byte offset of the float32 scales
  int64_t tail_offset() const;    // FP8: byte offset of the bf16 columns
  int64_t row_bytes() const;      // bytes per token row
};

// MLA rows [kv_lora_rank latent | rope key]: FP8 quantizes the latent in
// tiles of 128 and keeps the rope key bf16 (FlashMLA's layout).
KvRowLayout MlaKvRowLayout(KvCacheDtype dtype, int64_t kv_lora_rank, int64_t rope_dim);
// GQA rows [keys | values] of kv_heads heads: FP8 quantizes everything with
// one scale per head's keys and per head's values.
KvRowLayout GqaKvRowLayout(KvCacheDtype dtype, int64_t kv_heads, int64_t head_dim);

// Stores one row of `layout.width` floats into `layout.row_bytes()` bytes at
// `out` (padding bytes are zeroed). `layout` must be valid.
void QuantizeKvRow(const KvRowLayout& layout, const float* in, uint8_t* out);
// Reads one stored row back into `layout.width` floats.
void DequantizeKvRow(const KvRowLayout& layout, const uint8_t* in, float* out);

}  // namespace moeserve

#endif  // MOESERVE_KERNELS_KV_CACHE_LAYOUT_H_
