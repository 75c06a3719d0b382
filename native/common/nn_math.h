// The per-element rules of the nn kernels, compiled by both compilers: exp, the normal tail and tanh as branch-free
// float code (libm's expf/erff/tanhf are opaque calls that keep every CPU loop around them scalar), GELU (erf and tanh
// forms), SiLU, SwiGLU, ReLU and tanh with their gradients, and the per-element steps of layer norm, RMS norm and
// softmax. The CPU bodies
// (native/cpu/nn_body.inc, once per ISA path) and the CUDA kernels (native/cuda/nn.cu, elementwise.cu) run these same
// lines; only how rows are reduced differs (eight double lanes on the CPU, a warp on the GPU).
#pragma once

#include <math.h>

#include <cstdint>
#include <cstring>

#include "host_device.h"

// GCC will not if-convert a select whose arms hold float arithmetic that might raise a floating-point exception
// (exp's clamp, tanh's two branches) unless it may ignore those flags; nothing here reads them. The CPU loops that
// inline these functions are compiled with the same option (nn_body.inc), so GCC inlines across them.
#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#endif

namespace bidora::math {

// |x| written out: std::fabs is an inline function of <cmath> compiled without the optimize pragma above, and GCC
// will not inline across the two, which leaves a call inside every loop that uses it.
BIDORA_HD float absolute(float x) { return x < 0.0f ? -x : x; }

BIDORA_HD float float_from_bits(int32_t bits) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(bits);
#else
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
#endif
}

// e^x to about 2e-7 relative for x <= 88 (results past e^88 saturate there; every caller passes x <= 0 or only
// needs "huge"); exactly 0 below -87, where e^x is under float's smallest normal anyway.
BIDORA_HD float exp_approx(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  // ln 2 split in two so that n · kLn2High is exact for every |n| <= 128 (Cody and Waite's reduction).
  constexpr float kLn2High = 0.693145751953125f;
  constexpr float kLn2Low = 1.42860682030941723212e-6f;
  constexpr float kRoundToInteger = 12582912.0f;  // 1.5 · 2^23: adding and subtracting it rounds to an integer
  const float clamped = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = (clamped * kLog2e + kRoundToInteger) - kRoundToInteger;
  const float r = (clamped - n * kLn2High) - n * kLn2Low;  // |r| <= ln2 / 2 (plus an ulp)
  // Taylor series of e^r to degree 7: the first omitted term is below 6e-9 on |r| <= ln2 / 2.
  float series = 1.0f / 5040.0f;
  series = series * r + 1.0f / 720.0f;
  series = series * r + 1.0f / 120.0f;
  series = series * r + 1.0f / 24.0f;
  series = series * r + 1.0f / 6.0f;
  series = series * r + 0.5f;
  series = series * r + 1.0f;
  series = series * r + 1.0f;
  const float two_to_n = float_from_bits((static_cast<int32_t>(n) + 127) << 23);  // n in [-126, 127]
  return x < -87.0f ? 0.0f : series * two_to_n;
}

// erfc(|x| / √2) · e^(x² / 2), so that erfc(|x| / √2) = this · e^(−x² / 2): a degree-9 polynomial in
// t = 1 / (1 + p z), z = |x| / √2, p = 0.47047, least-squares fitted for relative error (below 1e-7 in exact
// arithmetic, about 4e-7 as evaluated in float) over z in [0, 9.5], past which e^(−z²) is 0 in float anyway. The
// relative fit keeps GELU and its gradient accurate deep into the negative tail, where an absolute error bound
// (Abramowitz and Stegun 7.1.26, 1.5e-7) would be larger than Φ(x) itself.
BIDORA_HD float scaled_normal_tail(float abs_x) {
  constexpr float kPOverSqrt2 = 0.332672527344835f;
  const float t = 1.0f / (1.0f + kPOverSqrt2 * abs_x);
  float poly = -4.440949706e-02f;
  poly = poly * t + 2.552900622e-01f;
  poly = poly * t - 5.388846673e-01f;
  poly = poly * t + 4.384793836e-01f;
  poly = poly * t - 1.072633762e-01f;
  poly = poly * t + 2.404645423e-01f;
  poly = poly * t + 2.242901509e-01f;
  poly = poly * t + 2.666527937e-01f;
  poly = poly * t + 2.653806752e-01f;
  return poly * t;
}

// tanh with about 3e-7 relative error: an odd Taylor polynomial near 0, where 1 − 2 / (e^2|x| + 1) would cancel.
BIDORA_HD float tanh_approx(float x) {
  const float abs_x = absolute(x);
  const float far = 1.0f - 2.0f / (exp_approx(2.0f * abs_x) + 1.0f);
  const float x2 = x * x;
  float near = 62.0f / 2835.0f;
  near = near * x2 - 17.0f / 315.0f;
  near = near * x2 + 2.0f / 15.0f;
  near = near * x2 - 1.0f / 3.0f;
  near = near * x2 + 1.0f;
  near *= x;
  // The first omitted term, 1382/155925 x^11, is below 2e-8 on |x| < 0.3.
  return abs_x < 0.3f ? near : (x < 0.0f ? -far : far);
}

// ---- activations ----

// GELU in its erf form, x Φ(x), with Φ(x) from the tail: Φ(−|x|) keeps full relative precision for negative x.
BIDORA_HD float gelu(float x) {
  const float half_tail = 0.5f * scaled_normal_tail(absolute(x)) * exp_approx(-0.5f * x * x);
  const float cdf = x < 0.0f ? half_tail : 1.0f - half_tail;
  return x * cdf;
}

// d/dx x Φ(x) = Φ(x) + x φ(x), times the output's gradient.
BIDORA_HD float gelu_backward(float x, float grad_out) {
  constexpr float kInvSqrt2Pi = 0.39894228040143268f;
  const float gaussian = exp_approx(-0.5f * x * x);
  const float half_tail = 0.5f * scaled_normal_tail(absolute(x)) * gaussian;
  const float cdf = x < 0.0f ? half_tail : 1.0f - half_tail;
  return grad_out * (cdf + x * kInvSqrt2Pi * gaussian);
}

// σ(z) = 1 / (1 + e^−z), and 1 − σ(z) = e^−z σ(z) without the cancellation of 1 − σ for z >> 0. e^−z saturates at
// e^88 for z < −88, where σ is below float's smallest normal and every caller multiplies it by something finite.
struct Sigmoid {
  float value, complement;
};
BIDORA_HD Sigmoid sigmoid(float z) {
  const float e = exp_approx(-z);
  const float value = 1.0f / (1.0f + e);
  return {value, e * value};
}

// GELU's tanh approximation (GPT-2's `gelu_new`, transformers' `gelu_pytorch_tanh`): 0.5 x (1 + tanh(u)) with
// u = √(2/π) (x + 0.044715 x³), written as x σ(2u), since 0.5 (1 + tanh(u)) = σ(2u): one exp, and the negative tail
// keeps its relative precision where 1 + tanh(u) would cancel to 0.
constexpr float kGeluTanhScale = 0.7978845608028654f;  // √(2/π)
constexpr float kGeluTanhCubic = 0.044715f;
BIDORA_HD float gelu_tanh(float x) {
  const float u = kGeluTanhScale * x * (1.0f + kGeluTanhCubic * x * x);
  return x * sigmoid(2.0f * u).value;
}

// d/dx x σ(2u) = σ(2u) + 2 x σ(2u) (1 − σ(2u)) u', u' = √(2/π) (1 + 3 · 0.044715 x²).
BIDORA_HD float gelu_tanh_backward(float x, float grad_out) {
  const float x2 = x * x;
  const float u = kGeluTanhScale * x * (1.0f + kGeluTanhCubic * x2);
  const float du = kGeluTanhScale * (1.0f + 3.0f * kGeluTanhCubic * x2);
  const Sigmoid s = sigmoid(2.0f * u);
  return grad_out * (s.value + 2.0f * x * s.value * s.complement * du);
}

// SiLU (swish), x σ(x): Llama's MLP activation; its gradient σ(x) (1 + x (1 − σ(x))).
BIDORA_HD float silu(float x) { return x * sigmoid(x).value; }
BIDORA_HD float silu_derivative(float x) {
  const Sigmoid s = sigmoid(x);
  return s.value * (1.0f + x * s.complement);
}
BIDORA_HD float silu_backward(float x, float grad_out) { return grad_out * silu_derivative(x); }

// SwiGLU, silu(gate) ⊙ up (Llama's down_proj input): d gate = dy · up · silu'(gate), d up = dy · silu(gate).
BIDORA_HD float swiglu(float gate, float up) { return silu(gate) * up; }
BIDORA_HD float swiglu_backward_gate(float gate, float up, float grad_out) {
  return grad_out * up * silu_derivative(gate);
}
BIDORA_HD float swiglu_backward_up(float gate, float grad_out) { return grad_out * silu(gate); }

// How many keys (a prefix of key_length) query `row` of query_length sees: all, or under the causal mask those
// j <= row + key_length − query_length (aligned at the end, as when a KV cache holds the earlier keys).
BIDORA_HD int64_t attention_visible_keys(int64_t row, int64_t query_length, int64_t key_length, bool causal) {
  if (!causal) return key_length;
  const int64_t end = row + key_length - query_length + 1;
  return end < 0 ? 0 : (end > key_length ? key_length : end);
}

BIDORA_HD float relu(float x) { return x > 0.0f ? x : 0.0f; }
BIDORA_HD float relu_backward(float x, float grad_out) { return x > 0.0f ? grad_out : 0.0f; }
// From the forward's output: dx = dy (1 − y²).
BIDORA_HD float tanh_backward(float out, float grad_out) { return grad_out * (1.0f - out * out); }

// ---- layer norm: out = (x − mean) rstd gamma + beta, statistics in double ----

// rstd = 1 / sqrt(biased variance + eps), from Σ (x − mean)² over d elements.
BIDORA_HD float layer_norm_rstd(double squared_deviation, int64_t d, float eps) {
  return static_cast<float>(1.0 / sqrt(squared_deviation / static_cast<double>(d) + eps));
}

BIDORA_HD float layer_norm_value(float x, float mean, float rstd, float gamma, float beta) {
  return (x - mean) * rstd * gamma + beta;
}

// dx = rstd (g − mean(g)) − x̂ · rstd mean(g x̂), with g = dy ⊙ gamma (rounded once, the same in every pass) and
// x̂ = (x − mean) rstd; scaled_mean_g_normalized = rstd · mean(g x̂).
BIDORA_HD float layer_norm_backward_value(float g, float x, float mean, float rstd, float mean_g,
                                          float scaled_mean_g_normalized) {
  const float normalized = (x - mean) * rstd;
  return rstd * (g - mean_g) - normalized * scaled_mean_g_normalized;
}

// ---- RMS norm (Llama's RMSNorm): out = x rstd weight, rstd = 1 / sqrt(mean(x²) + eps), the sum of squares in double
// --

BIDORA_HD float rms_norm_rstd(double sum_squares, int64_t d, float eps) {
  return static_cast<float>(1.0 / sqrt(sum_squares / static_cast<double>(d) + eps));
}

// weight · (x · rstd), in transformers' order.
BIDORA_HD float rms_norm_value(float x, float rstd, float weight) { return weight * (x * rstd); }

// dx = rstd (g − x̂ mean(g x̂)), g = dy ⊙ weight, x̂ = x rstd; scaled_mean_g_normalized = rstd · mean(g x̂).
BIDORA_HD float rms_norm_backward_value(float g, float x, float rstd, float scaled_mean_g_normalized) {
  return rstd * g - (x * rstd) * scaled_mean_g_normalized;
}

// ---- softmax ----

// e^(x − max) for a key the mask keeps (mask null, or its entry non-zero); exactly 0 for a masked one.
BIDORA_HD float masked_exp(float x, const float* mask, int64_t j, float max) {
  return mask == nullptr || mask[j] != 0.0f ? exp_approx(x - max) : 0.0f;
}

// dx = y (dy − Σ dy·y), given that dot.
BIDORA_HD float softmax_backward_value(float out, float grad_out, float dot) { return out * (grad_out - dot); }

}  // namespace bidora::math

#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#pragma GCC pop_options
#endif
