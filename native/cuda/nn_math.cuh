// Per-element and per-row math of the nn, optimizer and hypergradient kernels, shared with the host test. Row
// functions take (lane, lanes): a kernel runs them with lanes = 32 (one warp per row) and combines the partials
// with a fixed shuffle tree; the host test runs every lane in turn, which checks that the lanes cover each element
// exactly once. Same formulas as native/cpu/nn_body.inc; the optimizer rules are the CPU's own
// (../common/optim_math.h).
//
// Legend: D the row length (features, keys, classes).
#pragma once

#include <math.h>

#include <vector>

#include "../common/nn_math.h"
#include "../common/optim_math.h"
#include "host_device.h"

namespace bidora::cuda {

// ---- the per-element rules: the CPU's own (../common/nn_math.h) ---------------------------------------------------

using math::exp_approx;
using math::gelu;
using math::gelu_backward;
using math::gelu_tanh;
using math::gelu_tanh_backward;
using math::layer_norm_backward_value;
using math::layer_norm_rstd;
using math::layer_norm_value;
using math::masked_exp;
using math::relu;
using math::relu_backward;
using math::rms_norm_backward_value;
using math::rms_norm_rstd;
using math::rms_norm_value;
using math::silu;
using math::silu_backward;
using math::softmax_backward_value;
using math::swiglu;
using math::swiglu_backward_gate;
using math::swiglu_backward_up;
using math::tanh_approx;
using math::tanh_backward;

// ---- layer norm: out = (x − mean) rstd gamma + beta, two passes (mean, then squared deviations) ------------------

BIDORA_HD double strided_squared_deviation(const float* x, double mean, int64_t d, int lane, int lanes) {
  double total = 0.0;
  for (int64_t j = lane; j < d; j += lanes) total += (x[j] - mean) * (x[j] - mean);
  return total;
}

BIDORA_HD void layer_norm_apply(float* out, const float* x, const float* gamma, const float* beta, float mean,
                                float rstd, int64_t d, int lane, int lanes) {
  for (int64_t j = lane; j < d; j += lanes) out[j] = layer_norm_value(x[j], mean, rstd, gamma[j], beta[j]);
}

// Backward: with g = dy ⊙ gamma and x̂ = (x − mean) rstd, dx = rstd (g − mean(g)) − x̂ rstd mean(g x̂). g is the
// same rounded product in both passes (rounded_product), so a row whose g is constant (D = 1) gets g − mean(g) = 0
// exactly; an FMA of dy · gamma − mean(g) would leave its rounding error, amplified by rstd (1e6 for eps = 1e-12).
struct LayerNormSums {
  double g, g_normalized;  // Σ g, Σ g x̂
};

BIDORA_HD LayerNormSums layer_norm_backward_partial(const float* grad_out, const float* x, const float* gamma,
                                                    float mean, float rstd, int64_t d, int lane, int lanes) {
  LayerNormSums sums{0.0, 0.0};
  for (int64_t j = lane; j < d; j += lanes) {
    const float g = rounded_product(grad_out[j], gamma[j]);
    sums.g += g;
    sums.g_normalized += static_cast<double>(g) * ((x[j] - mean) * rstd);
  }
  return sums;
}

BIDORA_HD void layer_norm_backward_apply(float* grad_x, const float* grad_out, const float* x, const float* gamma,
                                         float mean, float rstd, LayerNormSums sums, int64_t d, int lane, int lanes) {
  const float mean_g = static_cast<float>(sums.g / static_cast<double>(d));
  const float scaled_mean_g_normalized = static_cast<float>(rstd * sums.g_normalized / static_cast<double>(d));
  for (int64_t j = lane; j < d; j += lanes) {
    const float g = rounded_product(grad_out[j], gamma[j]);
    grad_x[j] = layer_norm_backward_value(g, x[j], mean, rstd, mean_g, scaled_mean_g_normalized);
  }
}

// ---- RMS norm: out = weight ⊙ x rstd, rstd = 1 / sqrt(mean(x²) + eps) from Σ x² in double (strided_dot) ---------

BIDORA_HD void rms_norm_apply(float* out, const float* x, const float* weight, float rstd, int64_t d, int lane,
                              int lanes) {
  for (int64_t j = lane; j < d; j += lanes) out[j] = rms_norm_value(x[j], rstd, weight[j]);
}

// Backward: dx = rstd (g − x̂ mean(g x̂)), g = dy ⊙ weight (rounded_product: the same g in the sum and the result),
// x̂ = x rstd. The partial is the lane's share of Σ g x.
BIDORA_HD double rms_norm_backward_partial(const float* grad_out, const float* x, const float* weight, int64_t d,
                                           int lane, int lanes) {
  double total = 0.0;
  for (int64_t j = lane; j < d; j += lanes)
    total += static_cast<double>(rounded_product(grad_out[j], weight[j])) * x[j];
  return total;
}

BIDORA_HD void rms_norm_backward_apply(float* grad_x, const float* grad_out, const float* x, const float* weight,
                                       float rstd, double sum_g_x, int64_t d, int lane, int lanes) {
  const float scaled_mean_g_normalized =
      static_cast<float>(static_cast<double>(rstd) * rstd * sum_g_x / static_cast<double>(d));
  for (int64_t j = lane; j < d; j += lanes) {
    grad_x[j] = rms_norm_backward_value(rounded_product(grad_out[j], weight[j]), x[j], rstd, scaled_mean_g_normalized);
  }
}

// ---- softmax with a key mask (0 masks; masked keys get exactly 0, a fully masked row is all zeros) --------------

BIDORA_HD float masked_logit(const float* x, const float* mask, int64_t j) {
  return mask == nullptr || mask[j] != 0.0f ? x[j] : -INFINITY;
}

BIDORA_HD float strided_masked_max(const float* x, const float* mask, int64_t d, int lane, int lanes) {
  float best = -INFINITY;
  for (int64_t j = lane; j < d; j += lanes) best = fmaxf(best, masked_logit(x, mask, j));
  return best;
}

// Writes e^(x − max) (0 where masked) and returns the lane's share of their sum. max = −inf: every key masked.
BIDORA_HD double softmax_exp_partial(float* out, const float* x, const float* mask, float max, int64_t d, int lane,
                                     int lanes) {
  double total = 0.0;
  for (int64_t j = lane; j < d; j += lanes) {
    const float value = max == -INFINITY ? 0.0f : masked_exp(x[j], mask, j, max);
    out[j] = value;
    total += value;
  }
  return total;
}

BIDORA_HD void scale_strided(float* out, float factor, int64_t d, int lane, int lanes) {
  for (int64_t j = lane; j < d; j += lanes) out[j] *= factor;
}

// 1 / Σ, or 0 for an all-masked row (whose entries are already 0).
BIDORA_HD float softmax_normalizer(double total) { return total > 0.0 ? static_cast<float>(1.0 / total) : 0.0f; }

// dx = y ⊙ (dy − Σ dy·y), given that dot.
BIDORA_HD void softmax_backward_apply(float* grad_x, const float* out, const float* grad_out, float dot, int64_t d,
                                      int lane, int lanes) {
  for (int64_t j = lane; j < d; j += lanes) grad_x[j] = softmax_backward_value(out[j], grad_out[j], dot);
}

// ---- cross-entropy: per-row loss logsumexp − logit[label]; grad = scale (softmax − onehot) -----------------------

BIDORA_HD double strided_exp_sum(const float* x, float max, int64_t d, int lane, int lanes) {
  double total = 0.0;
  for (int64_t j = lane; j < d; j += lanes) total += exp_approx(x[j] - max);
  return total;
}

// (max − logit) first: when the label holds the max the loss is log Σ alone, with no large terms to cancel.
BIDORA_HD float cross_entropy_row_loss(float max, double exp_sum, float label_logit) {
  return static_cast<float>(static_cast<double>(max - label_logit) + log(exp_sum));
}

BIDORA_HD void cross_entropy_backward_apply(float* grad, const float* logits, float max, double exp_sum,
                                            float row_scale, int32_t label, int64_t c, int lane, int lanes) {
  const float factor = static_cast<float>(row_scale / exp_sum);
  for (int64_t j = lane; j < c; j += lanes) {
    grad[j] = factor * exp_approx(logits[j] - max) - (j == label ? row_scale : 0.0f);
  }
}

// ---- optimizers and the hypergradient: the CPU's own rules (../common/optim_math.h) ----------------------------

using math::adamw_scalars;
using math::adamw_update;
using math::AdamwScalars;
using math::hypergradient_combine;
using math::perturbation_epsilon;
using math::sgd_update;
using math::SgdScalars;

// ---- embedding backward's plan (host only: the ids are host memory in the binding) ------------------------------

// A stable counting sort of positions by id: row_start [V + 1] delimits each id's slots in order [n], where its
// positions appear in ascending order, so the kernel's sum order depends on the ids alone.
inline void embedding_backward_plan(int32_t* order, int32_t* row_start, const int32_t* ids, int64_t n, int64_t v) {
  for (int64_t id = 0; id <= v; ++id) row_start[id] = 0;
  for (int64_t position = 0; position < n; ++position) ++row_start[ids[position] + 1];
  for (int64_t id = 0; id < v; ++id) row_start[id + 1] += row_start[id];
  std::vector<int32_t> cursor(row_start, row_start + v);
  for (int64_t position = 0; position < n; ++position) order[cursor[ids[position]]++] = static_cast<int32_t>(position);
}

}  // namespace bidora::cuda
