// Compiled with -ffp-contract=off (CMakeLists.txt): every product and sum below is rounded on its own, as
// torch's elementwise kernels do; a fused multiply-add would change the last bit of inv_freq.
//
// Notation of the comments: f(x) is a Python number rounded to fp32, the way torch applies a Python scalar to
// an fp32 tensor; every tensor operation is one fp32 rounding.
#include "miniseq/model/rope_scaling.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

namespace miniseq {

namespace {

// _compute_default_rope_parameters: inv_freq[i] = 1 / f(base) ** (f(2i) / f(D)).
std::vector<float> default_inv_freq(double base, int64_t D) {
  std::vector<float> inv(static_cast<size_t>(D / 2));
  for (int64_t i = 0; i < D / 2; ++i) {
    const float expo = static_cast<float>(2 * i) / static_cast<float>(D);
    inv[static_cast<size_t>(i)] = 1.0f / std::pow(static_cast<float>(base), expo);
  }
  return inv;
}

// _compute_dynamic_ntk_parameters with a tensor seq_len (the forward's update): the base grows in fp32.
std::vector<float> dynamic_inv_freq(const ModelConfig& c, int64_t seq_len) {
  const int64_t D = c.head_dim;
  const double factor = c.rope.factor;
  const auto sl = static_cast<float>(std::max(seq_len, c.max_position_embeddings));
  float t = static_cast<float>(factor) * sl;              // factor * seq_len
  t = t / static_cast<float>(c.max_position_embeddings);  // / max_position_embeddings
  t = t - static_cast<float>(factor - 1.0);               // - (factor - 1)
  // ** (dim / (dim - 2)): torch's pow with a Python-float exponent evaluates std::pow(float, double) in
  // double
  t = static_cast<float>(
      std::pow(static_cast<double>(t), static_cast<double>(D) / static_cast<double>(D - 2)));
  const float base = static_cast<float>(c.rope_theta) * t;  // base * (...)
  std::vector<float> inv(static_cast<size_t>(D / 2));
  for (int64_t i = 0; i < D / 2; ++i) {
    const float expo = static_cast<float>(2 * i) / static_cast<float>(D);
    inv[static_cast<size_t>(i)] = 1.0f / std::pow(base, expo);
  }
  return inv;
}

double yarn_mscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// _compute_yarn_parameters.
RopeParams yarn(const ModelConfig& c) {
  const RopeScaling& r = c.rope;
  const int64_t D = c.head_dim, half = D / 2;
  const double base = c.rope_theta, factor = r.factor;
  RopeParams p;
  double attention = 0.0;
  if (r.attention_factor)
    attention = *r.attention_factor;
  else if (r.mscale && *r.mscale != 0.0 && r.mscale_all_dim && *r.mscale_all_dim != 0.0)
    attention = yarn_mscale(factor, *r.mscale) / yarn_mscale(factor, *r.mscale_all_dim);
  else
    attention = yarn_mscale(factor, 1.0);
  p.attention_scaling = static_cast<float>(attention);

  // `get("beta_fast") or 32`: absent or 0 take the defaults.
  const double beta_fast = r.beta_fast && *r.beta_fast != 0.0 ? *r.beta_fast : 32.0;
  const double beta_slow = r.beta_slow && *r.beta_slow != 0.0 ? *r.beta_slow : 1.0;
  const auto orig = static_cast<double>(r.original_max_position_embeddings);
  auto correction_dim = [&](double rotations) {  // in double, as Python's math
    return (static_cast<double>(D) * std::log(orig / (rotations * 2 * std::numbers::pi))) /
           (2 * std::log(base));
  };
  double low = correction_dim(beta_fast), high = correction_dim(beta_slow);
  if (r.truncate) low = std::floor(low), high = std::ceil(high);
  low = std::max(low, 0.0), high = std::min(high, static_cast<double>(D - 1));
  if (low == high) high += 0.001;  // transformers' guard against a zero-width ramp

  p.inv_freq.resize(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const float pos_freq =
        std::pow(static_cast<float>(base), static_cast<float>(2 * i) / static_cast<float>(D));
    const float extrapolation = 1.0f / pos_freq;
    const float interpolation = 1.0f / (static_cast<float>(factor) * pos_freq);
    float ramp = (static_cast<float>(i) - static_cast<float>(low)) / static_cast<float>(high - low);
    ramp = std::clamp(ramp, 0.0f, 1.0f);
    const float extrapolation_factor = 1.0f - ramp;
    const float a = interpolation * (1.0f - extrapolation_factor);
    const float b = extrapolation * extrapolation_factor;
    p.inv_freq[static_cast<size_t>(i)] = a + b;
  }
  return p;
}

// _compute_llama3_parameters. `x / tensor` is torch's reciprocal-then-multiply (Tensor.__rtruediv__).
std::vector<float> llama3_inv_freq(const ModelConfig& c) {
  const RopeScaling& r = c.rope;
  std::vector<float> inv = default_inv_freq(c.rope_theta, c.head_dim);
  const auto old = static_cast<double>(r.original_max_position_embeddings);
  const auto low_wavelen = static_cast<float>(old / r.low_freq_factor);
  const auto high_wavelen = static_cast<float>(old / r.high_freq_factor);
  const auto factor = static_cast<float>(r.factor);
  for (float& f : inv) {
    const float wavelen = (1.0f / f) * static_cast<float>(2 * std::numbers::pi);
    float scaled = wavelen > low_wavelen ? f / factor : f;
    const float smooth =
        ((1.0f / wavelen) * static_cast<float>(old) - static_cast<float>(r.low_freq_factor)) /
        static_cast<float>(r.high_freq_factor - r.low_freq_factor);
    const float a = ((1.0f - smooth) * scaled) / factor;
    const float b = smooth * scaled;
    const float smoothed = a + b;
    const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
    f = medium ? smoothed : scaled;
  }
  return inv;
}

}  // namespace

RopeParams rope_params_plain(double theta, int64_t D, double linear_factor) {
  RopeParams p;
  p.inv_freq = default_inv_freq(theta, D);
  if (linear_factor != 1.0)
    for (float& f : p.inv_freq) f = f / static_cast<float>(linear_factor);  // inv_freq /= factor
  return p;
}

RopeParams rope_params(const ModelConfig& c, int64_t seq_len) {
  switch (c.rope.type) {
    case RopeType::Default:
      return rope_params_plain(c.rope_theta, c.head_dim);
    case RopeType::Linear:
      return rope_params_plain(c.rope_theta, c.head_dim, c.rope.factor);
    case RopeType::Dynamic: {
      RopeParams p;
      // At or below max_position_embeddings transformers keeps (or resets to) the default frequencies.
      p.inv_freq = seq_len > c.max_position_embeddings ? dynamic_inv_freq(c, seq_len)
                                                       : default_inv_freq(c.rope_theta, c.head_dim);
      return p;
    }
    case RopeType::Yarn:
      return yarn(c);
    case RopeType::Llama3: {
      RopeParams p;
      p.inv_freq = llama3_inv_freq(c);
      return p;
    }
  }
  return {};
}

}  // namespace miniseq
