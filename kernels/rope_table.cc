// RoPE frequency tables, following DeepSeek-V3's precompute_freqs_cis
// (inference/model.py) in float32, with the YaRN attention factor in Hugging
// Face's convention (it multiplies cos and sin).
#include <algorithm>
#include <cmath>
#include <numbers>

#include "kernels/ops.h"

namespace moeserve {
namespace {

// The rotary dimension at which a wavelength makes `num_rotations` turns over
// the original context (YaRN's find_correction_dim), in double as Python does.
double CorrectionDim(double num_rotations, double dim, double base, double orig_max_pos) {
  return dim * std::log(orig_max_pos / (num_rotations * 2.0 * std::numbers::pi)) /
         (2.0 * std::log(base));
}

// Applies YaRN's frequency interpolation to `inv_freq` in place: dimension
// pairs below `low` keep their frequency, pairs above `high` are divided by
// `factor`, and a linear ramp blends in between. Every step rounds to
// float32 as the torch reference does.
void ApplyYarn(const RopeParams& p, std::vector<float>& inv_freq) {
  const double dim = static_cast<double>(p.rotary_dim);
  const double orig = static_cast<double>(p.original_max_position_embeddings);
  double low = std::max(std::floor(CorrectionDim(p.beta_fast, dim, p.theta, orig)), 0.0);
  double high = std::min(std::ceil(CorrectionDim(p.beta_slow, dim, p.theta, orig)), dim - 1);
  if (low == high) high += 0.001;  // avoid a division by zero in the ramp
  const float lo = static_cast<float>(low), span = static_cast<float>(high - low);
  const float factor = static_cast<float>(p.factor);
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    const float ramp = std::clamp((static_cast<float>(i) - lo) / span, 0.0f, 1.0f);
    const float smooth = 1.0f - ramp;
    const float f = inv_freq[i];
    inv_freq[i] = f / factor * (1.0f - smooth) + f * smooth;
  }
}

}  // namespace

double YarnMscale(double factor, double mscale) {
  return factor <= 1.0 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

RopeTable MakeRopeTable(const RopeParams& params, RopeStyle style) {
  RopeTable table;
  table.style = style;
  const int64_t half = params.rotary_dim / 2;
  table.inv_freq.resize(static_cast<size_t>(std::max<int64_t>(half, 0)));
  // 1 / base ** (arange(0, dim, 2, float32) / dim), each operation in float32.
  const float base = static_cast<float>(params.theta);
  const float dim = static_cast<float>(params.rotary_dim);
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / dim;
    table.inv_freq[static_cast<size_t>(i)] = 1.0f / std::pow(base, exponent);
  }
  if (params.yarn && params.factor > 1.0) {
    ApplyYarn(params, table.inv_freq);
    // YarnMscale(factor, 0) == 1, so a missing mscale_all_dim (0) leaves
    // YarnMscale(factor, mscale) alone.
    table.attention_factor = static_cast<float>(YarnMscale(params.factor, params.mscale) /
                                                YarnMscale(params.factor, params.mscale_all_dim));
  }
  return table;
}

}  // namespace moeserve
