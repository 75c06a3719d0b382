// Softmax over the last axis with an optional [batch, D] key mask, and its backward: one row per call of the body.
#include <algorithm>

#include "../core/threadpool.h"
#include "nn.h"
#include "nn_kernels.h"

namespace bidora::cpu {

namespace {

constexpr int64_t kParallelElements = 1 << 14;

int64_t min_parallel_rows(int64_t d) { return std::max<int64_t>(1, kParallelElements / std::max<int64_t>(d, 1)); }

}  // namespace

void softmax_forward(float* out, const float* x, const float* mask, int64_t batch, int64_t rows_per_batch, int64_t d) {
  const auto row_kernel = nn_kernels(active_isa()).softmax_row;
  parallel_for(batch * rows_per_batch, 1, min_parallel_rows(d), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const float* row_mask = mask == nullptr ? nullptr : mask + (row / rows_per_batch) * d;
      row_kernel(out + row * d, x + row * d, row_mask, 1.0f, d);
    }
  });
}

void softmax_backward(float* grad_x, const float* out, const float* grad_out, int64_t rows, int64_t d) {
  const auto row_kernel = nn_kernels(active_isa()).softmax_backward_row;
  parallel_for(rows, 1, min_parallel_rows(d), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) row_kernel(grad_x + row * d, out + row * d, grad_out + row * d, d);
  });
}

}  // namespace bidora::cpu
