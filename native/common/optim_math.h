// The per-element rules of the optimizers and of BiDoRA's hypergradient, compiled by both compilers: the CPU loops
// (native/cpu/optim_body.inc, once per ISA path) and the CUDA kernels (native/cuda/optim.cu) run these same lines, so
// a GPU step is the CPU's step to the rounding of its own float operations.
#pragma once

#include <math.h>

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace bidora::math {

// ---- AdamW: PyTorch's torch.optim.AdamW (foreach=False, amsgrad=False), per element ----------------------------
//   p ← p (1 − lr·wd);  m ← lerp(m, g, 1 − β1);  v ← β2 v + (1 − β2) g²;
//   p ← p − lr / (1 − β1^t) · m / (sqrt(v) / sqrt(1 − β2^t) + eps).

// The per-step scalars, computed once in double (as PyTorch does) and rounded once.
struct AdamwScalars {
  float decay;                  // 1 − lr · weight_decay (decoupled weight decay)
  float beta1_weight;           // 1 − β1: the lerp weight of the first moment
  bool lerp_from_end;           // PyTorch's lerp switches formula at weight 0.5; matching it keeps rounding alike
  float beta2;                  // β2
  float one_minus_beta2;        // 1 − β2
  float step_size;              // lr / (1 − β1^t)
  float bias_correction2_sqrt;  // sqrt(1 − β2^t)
  float eps;
};

// step: the update's number, 1 first. Host code (static: see host_device.h).
static inline AdamwScalars adamw_scalars(double lr, double beta1, double beta2, double eps, double weight_decay,
                                         int64_t step) {
  const double t = static_cast<double>(step);
  const double beta1_weight = 1.0 - beta1;
  AdamwScalars scalars{};
  scalars.decay = static_cast<float>(1.0 - lr * weight_decay);
  scalars.beta1_weight = static_cast<float>(beta1_weight);
  scalars.lerp_from_end = std::abs(beta1_weight) >= 0.5;
  scalars.beta2 = static_cast<float>(beta2);
  scalars.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  scalars.step_size = static_cast<float>(lr / (1.0 - std::pow(beta1, t)));
  scalars.bias_correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(beta2, t)));
  scalars.eps = static_cast<float>(eps);
  return scalars;
}

// One element. `s` by value: a loop that passes its own local copy lets the compiler keep every scalar in a register.
template <bool kLerpFromEnd>
BIDORA_HD void adamw_update(float& param, float& exp_avg, float& exp_avg_sq, float grad, AdamwScalars s) {
  const float m = exp_avg;
  const float avg = kLerpFromEnd ? grad - (grad - m) * (1.0f - s.beta1_weight) : m + s.beta1_weight * (grad - m);
  const float sq = exp_avg_sq * s.beta2 + s.one_minus_beta2 * grad * grad;
  const float denominator = sqrtf(sq) / s.bias_correction2_sqrt + s.eps;
  exp_avg = avg;
  exp_avg_sq = sq;
  param = param * s.decay - s.step_size * avg / denominator;
}

BIDORA_HD void adamw_update(float& param, float& exp_avg, float& exp_avg_sq, float grad, AdamwScalars s) {
  if (s.lerp_from_end) {
    adamw_update<true>(param, exp_avg, exp_avg_sq, grad, s);
  } else {
    adamw_update<false>(param, exp_avg, exp_avg_sq, grad, s);
  }
}

// ---- SGD: PyTorch's torch.optim.SGD with dampening 0, per element ------------------------------------------------
//   d = g + wd·p (only when wd ≠ 0, which matters for an infinite p); with momentum, buf ← momentum·buf + d and
//   d = nesterov ? d + momentum·buf : buf; then p ← p − lr·d. A zero buffer gives exactly PyTorch's first step.

struct SgdScalars {
  float lr;
  float momentum;
  float weight_decay;
  bool nesterov;
};

// buffer: this element's momentum buffer (unused without kMomentum).
template <bool kDecay, bool kMomentum, bool kNesterov>
BIDORA_HD void sgd_update(float& param, float* buffer, float grad, SgdScalars s) {
  float direction = kDecay ? grad + s.weight_decay * param : grad;
  if (kMomentum) {
    const float velocity = *buffer * s.momentum + direction;
    *buffer = velocity;
    direction = kNesterov ? direction + s.momentum * velocity : velocity;
  }
  param -= s.lr * direction;
}

// buffer null: plain SGD (momentum 0).
BIDORA_HD void sgd_update(float& param, float* buffer, float grad, SgdScalars s) {
  if (s.weight_decay != 0.0f) {
    if (buffer == nullptr) return sgd_update<true, false, false>(param, buffer, grad, s);
    if (s.nesterov) return sgd_update<true, true, true>(param, buffer, grad, s);
    return sgd_update<true, true, false>(param, buffer, grad, s);
  }
  if (buffer == nullptr) return sgd_update<false, false, false>(param, buffer, grad, s);
  if (s.nesterov) return sgd_update<false, true, true>(param, buffer, grad, s);
  sgd_update<false, true, false>(param, buffer, grad, s);
}

// ---- BiDoRA's hypergradient: g − ξ (g⁺ − g⁻) / (2ε), as g − factor (g⁺ − g⁻) with factor = ξ / (2ε) -------------

BIDORA_HD float hypergradient_combine(float grad, float grad_plus, float grad_minus, float factor) {
  return grad - factor * (grad_plus - grad_minus);
}

// ε for the finite difference, radius / ||v||; a zero direction gives ε = 0 (the caller then keeps g alone).
BIDORA_HD float perturbation_epsilon(float radius, float direction_norm) {
  return direction_norm > 0.0f ? radius / direction_norm : 0.0f;
}

}  // namespace bidora::math
