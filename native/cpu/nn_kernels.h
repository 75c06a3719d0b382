// Private contract between the nn drivers (activation.cc, layer_norm.cc, softmax.cc, loss.cc) and the per-ISA bodies
// in nn_body.inc (compiled by nn_generic.cc, nn_avx2.cc, nn_avx512.cc). The drivers split rows between threads; a
// body handles one contiguous range of elements or one row, so the function-pointer call is per row, not per element.
#pragma once

#include <cstdint>

#include "../common/nn_math.h"
#include "../core/cpu_features.h"

namespace bidora::cpu {

struct NnKernels {
  void (*gelu_forward)(float* out, const float* x, int64_t n);
  void (*gelu_backward)(float* grad_x, const float* x, const float* grad_out, int64_t n);
  void (*relu_forward)(float* out, const float* x, int64_t n);
  void (*relu_backward)(float* grad_x, const float* x, const float* grad_out, int64_t n);
  void (*tanh_forward)(float* out, const float* x, int64_t n);
  void (*tanh_backward)(float* grad_x, const float* out, const float* grad_out, int64_t n);
  void (*gelu_tanh_forward)(float* out, const float* x, int64_t n);
  void (*gelu_tanh_backward)(float* grad_x, const float* x, const float* grad_out, int64_t n);
  void (*silu_forward)(float* out, const float* x, int64_t n);
  void (*silu_backward)(float* grad_x, const float* x, const float* grad_out, int64_t n);
  void (*swiglu_forward)(float* out, const float* gate, const float* up, int64_t n);
  void (*swiglu_backward)(float* grad_gate, float* grad_up, const float* gate, const float* up, const float* grad_out,
                          int64_t n);

  // One row of D; mean and rstd point at that row's slot.
  void (*layer_norm_row)(float* out, float* mean, float* rstd, const float* x, const float* gamma, const float* beta,
                         float eps, int64_t d);
  void (*layer_norm_backward_row)(float* grad_x, const float* grad_out, const float* x, const float* gamma, float mean,
                                  float rstd, int64_t d);
  // grad_gamma and grad_beta for columns [column_begin, column_end), each a sum over all rows in row order.
  void (*layer_norm_parameter_grads)(float* grad_gamma, float* grad_beta, const float* grad_out, const float* x,
                                     const float* mean, const float* rstd, int64_t rows, int64_t column_begin,
                                     int64_t column_end, int64_t d);

  // RMS norm: one row of D (rstd points at that row's slot); the weight gradient for columns [column_begin,
  // column_end), each a sum over all rows in row order.
  void (*rms_norm_row)(float* out, float* rstd, const float* x, const float* weight, float eps, int64_t d);
  void (*rms_norm_backward_row)(float* grad_x, const float* grad_out, const float* x, const float* weight, float rstd,
                                int64_t d);
  void (*rms_norm_weight_grad)(float* grad_weight, const float* grad_out, const float* x, const float* rstd,
                               int64_t rows, int64_t column_begin, int64_t column_end, int64_t d);

  // out = multiplier · softmax(x) over one row; mask (nullable) zero = masked. An all-masked row is all zeros.
  void (*softmax_row)(float* out, const float* x, const float* mask, float multiplier, int64_t d);
  void (*softmax_backward_row)(float* grad_x, const float* out, const float* grad_out, int64_t d);
  // log Σ exp(x_j) over one row, computed as max + log Σ exp(x_j − max).
  double (*log_sum_exp_row)(const float* x, int64_t d);
};

const NnKernels& nn_kernels(Isa isa);

}  // namespace bidora::cpu
