// Fused optimizer updates and in-place list arithmetic over many tensors at once, one body per ISA path.
//
// Every function takes a list of `count` tensors as parallel arrays of pointers plus their element counts, and
// writes in place. Work is cut into fixed chunks of each tensor before threads take them, so the result is the same
// bits whatever the thread count.
#pragma once

#include <cstdint>

#include "../common/optim_math.h"
#include "../core/cpu_features.h"

namespace bidora::cpu {

// The per-element rules and the per-step scalars live in ../common/optim_math.h, shared with the CUDA kernels.
using math::AdamwScalars;
using math::SgdScalars;

struct OptimKernels {
  void (*adamw)(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n, const AdamwScalars& s);
  // momentum_buffer null: plain SGD (momentum is 0).
  void (*sgd)(float* param, const float* grad, float* momentum_buffer, int64_t n, const SgdScalars& s);
  void (*scale_in_place)(float* values, float factor, int64_t n);
  void (*combine_hypergradient)(float* direct, const float* plus, const float* minus, float factor, int64_t n);
};

const OptimKernels& optim_kernels(Isa isa);

struct AdamwOptions {
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step;  // 1 on the first update, as PyTorch's state["step"] after its increment
};

// PyTorch's AdamW (torch.optim.AdamW, foreach=False, amsgrad=False, maximize=False), per element:
//   p ← p (1 − lr·wd);  m ← lerp(m, g, 1 − β1);  v ← β2 v + (1 − β2) g²;
//   p ← p − lr / (1 − β1^t) · m / (sqrt(v) / sqrt(1 − β2^t) + eps).
void adamw_step(float* const* params, const float* const* grads, float* const* exp_avgs, float* const* exp_avg_sqs,
                const int64_t* lengths, int64_t count, const AdamwOptions& options);

struct SgdOptions {
  double lr, momentum, weight_decay;
  bool nesterov;
};

// PyTorch's SGD with dampening 0: d = g + wd·p; buf ← momentum·buf + d; d = nesterov ? d + momentum·buf : buf;
// p ← p − lr·d. A zero buffer gives exactly PyTorch's first step (buf ← d), so callers start buffers at zero.
// momentum_buffers null (momentum 0): p ← p − lr·d.
void sgd_step(float* const* params, const float* const* grads, float* const* momentum_buffers, const int64_t* lengths,
              int64_t count, const SgdOptions& options);

// ys[i] += alpha · xs[i].
void axpy_list(float* const* ys, float alpha, const float* const* xs, const int64_t* lengths, int64_t count);
// tensors[i] *= factor.
void scale_list(float* const* tensors, float factor, const int64_t* lengths, int64_t count);
// direct[i] −= factor · (plus[i] − minus[i]): the finite-difference hypergradient correction.
void combine_hypergradient(float* const* direct, const float* const* plus, const float* const* minus, float factor,
                           const int64_t* lengths, int64_t count);

}  // namespace bidora::cpu
