// Private contract between the nn drivers (activation.cc, layer_norm.cc, softmax.cc, loss.cc) and the per-ISA bodies
// in nn_body.inc (compiled by nn_generic.cc, nn_avx2.cc, nn_avx512.cc). The drivers split rows between threads; a
// body handles one contiguous range of elements or one row, so the function-pointer call is per row, not per element.
#pragma once

#include <cstdint>

#include "../common/nn_math.h"
#include "../core/cpu_features.h"

namespace bidora::cpu {

// Fused attention's dropout draw (../cuda/random_math.cuh): keep when the mixed counter's top 53 bits reach threshold.
struct AttentionDropout {
  uint64_t key, threshold;
  float keep_scale;
};

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

  // Fused attention (attention.cc), one query row against one block of `cols` keys, of which those c < seen with
  // valid[c] != 0 are attended. The online-softmax step: p holds the row's scaled scores and receives e^(s − max)
  // (exactly 0 where not attended); *row_max and *row_sum are updated and *correction = e^(old max − new max) (0 when
  // nothing was seen before, 1 while nothing is) is what the row's accumulated output must be rescaled by.
  void (*attention_softmax_step)(float* p, const float* valid, int64_t seen, int64_t cols, float* row_max,
                                 float* row_sum, float* correction);
  // p [n] ⊙= dropout's factors (keep_scale or 0) at flat indices first, first + 1, ...
  void (*attention_dropout_row)(float* p, int64_t n, int64_t first, const AttentionDropout& draw);
  // The backward: s holds the row's scaled scores, dp = dO·V per key; writes P ⊙ Z to dropped and dS = P (Z dp −
  // row_dot) over s, with P = e^(s − lse) and Z dropout's factors at first + c (1 when draw is null). seen = 0 for a
  // row that saw no key (lse −inf): both all zeros.
  void (*attention_grad_row)(float* s, float* dropped, const float* dp, const float* valid, int64_t seen, int64_t cols,
                             float lse, float row_dot, int64_t first, const AttentionDropout* draw);
};

const NnKernels& nn_kernels(Isa isa);

}  // namespace bidora::cpu
