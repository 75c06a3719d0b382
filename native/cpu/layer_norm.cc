// Layer norm and RMS norm over the last axis: rows split between threads for the forward and the input gradient,
// columns for the parameter gradients.
#include <algorithm>

#include "../core/threadpool.h"
#include "nn.h"
#include "nn_kernels.h"

namespace bidora::cpu {

namespace {

constexpr int64_t kParallelElements = 1 << 15;

int64_t min_parallel_rows(int64_t d) { return std::max<int64_t>(1, kParallelElements / std::max<int64_t>(d, 1)); }

}  // namespace

void layer_norm_forward(float* out, float* mean, float* rstd, const float* x, const float* gamma, const float* beta,
                        float eps, int64_t rows, int64_t d) {
  const auto row_kernel = nn_kernels(active_isa()).layer_norm_row;
  parallel_for(rows, 1, min_parallel_rows(d), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      row_kernel(out + row * d, mean + row, rstd + row, x + row * d, gamma, beta, eps, d);
    }
  });
}

void layer_norm_backward(float* grad_x, float* grad_gamma, float* grad_beta, const float* grad_out, const float* x,
                         const float* gamma, const float* mean, const float* rstd, int64_t rows, int64_t d) {
  const NnKernels& kernels = nn_kernels(active_isa());
  parallel_for(rows, 1, min_parallel_rows(d), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      kernels.layer_norm_backward_row(grad_x + row * d, grad_out + row * d, x + row * d, gamma, mean[row], rstd[row],
                                      d);
    }
  });
  // A reduction over rows: each thread owns whole columns and sums every row in order, so no partial sums need
  // combining and the result is the same for any thread count.
  parallel_for(
      d, 16, std::max<int64_t>(1, kParallelElements / std::max<int64_t>(rows, 1)), [&](int64_t begin, int64_t end) {
        kernels.layer_norm_parameter_grads(grad_gamma, grad_beta, grad_out, x, mean, rstd, rows, begin, end, d);
      });
}

void rms_norm_forward(float* out, float* rstd, const float* x, const float* weight, float eps, int64_t rows,
                      int64_t d) {
  const auto row_kernel = nn_kernels(active_isa()).rms_norm_row;
  parallel_for(rows, 1, min_parallel_rows(d), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) row_kernel(out + row * d, rstd + row, x + row * d, weight, eps, d);
  });
}

void rms_norm_backward(float* grad_x, float* grad_weight, const float* grad_out, const float* x, const float* weight,
                       const float* rstd, int64_t rows, int64_t d) {
  const NnKernels& kernels = nn_kernels(active_isa());
  parallel_for(rows, 1, min_parallel_rows(d), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      kernels.rms_norm_backward_row(grad_x + row * d, grad_out + row * d, x + row * d, weight, rstd[row], d);
    }
  });
  // Whole columns per thread, every row in order: the same result for any thread count (as layer norm's).
  parallel_for(d, 16, std::max<int64_t>(1, kParallelElements / std::max<int64_t>(rows, 1)),
               [&](int64_t begin, int64_t end) {
                 kernels.rms_norm_weight_grad(grad_weight, grad_out, x, rstd, rows, begin, end, d);
               });
}

}  // namespace bidora::cpu
