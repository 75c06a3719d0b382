// Per-element rules of rotary position embeddings and of binary cross-entropy with logits, compiled by both compilers:
// the CPU kernels (native/cpu/rotary.cc, loss.cc), the CUDA kernels (native/cuda/nn.cu) and the host test run these
// same lines.
#pragma once

#include <math.h>

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace bidora::math {

// Pair i of a d-wide head turns at base^(−2i/d) radians per position. Computed in float32 as transformers computes
// inv_freq (and the angle as float32 position × inv_freq), so the angles round as theirs do.
BIDORA_HD float rotary_inverse_frequency(int64_t pair, int64_t d, float base) {
  return 1.0f / powf(base, static_cast<float>(2 * pair) / static_cast<float>(d));
}

// The pair (x_i, x_{i+d/2}) rotated by `angle` (transformers' x·cos + rotate_half(x)·sin), or by −angle when
// `inverse`: the rotation's transpose, which is its gradient.
BIDORA_HD void rotate_pair(float low, float high, float angle, bool inverse, float* out_low, float* out_high) {
  const float cosine = cosf(angle);
  const float sine = inverse ? -sinf(angle) : sinf(angle);
  *out_low = low * cosine - high * sine;
  *out_high = high * cosine + low * sine;
}

// max(z, 0) − z·y + log(1 + exp(−|z|)): BCE with logits for target y, finite for every finite z (PyTorch's form).
BIDORA_HD double bce_with_logits_term(float logit, float target) {
  const double z = logit;
  return (z > 0.0 ? z : 0.0) - z * static_cast<double>(target) + log1p(exp(-fabs(z)));
}

// d/dz of the term above: σ(z) − y, σ computed without overflow on either side.
BIDORA_HD float bce_with_logits_gradient(float logit, float target) {
  const float sigmoid = logit >= 0.0f ? 1.0f / (1.0f + expf(-logit)) : expf(logit) / (1.0f + expf(logit));
  return sigmoid - target;
}

}  // namespace bidora::math
