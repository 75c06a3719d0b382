// The nn kernels on the GPU: GELU, layer norm, RMS norm, masked softmax, cross-entropy, embedding. Forward and backward
// side by side; row kernels run one warp per row with the row math of nn_math.cuh, column reductions (parameter
// gradients) give each column to a fixed set of row lanes added in lane order, so every result is deterministic.
// Contracts as native/cpu/nn.h.
//
// Legend: n elements; rows x D for row ops (C classes for the losses); V vocabulary rows.
#include <algorithm>

#include "cuda_ops.h"
#include "device_common.cuh"
#include "nn_math.cuh"

namespace bidora::cuda {

namespace {

constexpr int kRowsPerBlock = 8;  // warps per block of the row kernels
constexpr int kRowThreads = kRowsPerBlock * kWarpSize;
constexpr int kReduceColumns = 32, kReduceRowLanes = 16;

unsigned row_kernel_blocks(int64_t rows) { return static_cast<unsigned>(ceil_div(rows, kRowsPerBlock)); }

// The row this warp owns, or −1 past the end.
__device__ __forceinline__ int64_t warp_row(int64_t rows) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarpSize;
  return row < rows ? row : -1;
}

// ---- kernels: GELU --------------------------------------------------------------------------------------------------

__global__ void gelu_forward_kernel(float* out, const float* x, int64_t n) {
  grid_stride(n, [&](int64_t index) { out[index] = gelu(x[index]); });
}

__global__ void gelu_backward_kernel(float* grad_x, const float* x, const float* grad_out, int64_t n) {
  grid_stride(n, [&](int64_t index) { grad_x[index] = gelu_backward(x[index], grad_out[index]); });
}

// ---- kernels: layer norm --------------------------------------------------------------------------------------------

__global__ void layer_norm_forward_kernel(float* out, float* mean, float* rstd, const float* x, const float* gamma,
                                          const float* beta, float eps, int64_t rows, int64_t d) {
  const int64_t row = warp_row(rows);
  if (row < 0) return;
  const int lane = threadIdx.x % kWarpSize;
  const float* x_row = x + row * d;
  // Statistics in double, stored as float, as on the CPU.
  const double mean_double = warp_sum(strided_sum(x_row, d, lane, kWarpSize)) / static_cast<double>(d);
  const float row_rstd =
      layer_norm_rstd(warp_sum(strided_squared_deviation(x_row, mean_double, d, lane, kWarpSize)), d, eps);
  const float row_mean = static_cast<float>(mean_double);
  layer_norm_apply(out + row * d, x_row, gamma, beta, row_mean, row_rstd, d, lane, kWarpSize);
  if (lane == 0) {
    mean[row] = row_mean;
    rstd[row] = row_rstd;
  }
}

__global__ void layer_norm_backward_kernel(float* grad_x, const float* grad_out, const float* x, const float* gamma,
                                           const float* mean, const float* rstd, int64_t rows, int64_t d) {
  const int64_t row = warp_row(rows);
  if (row < 0) return;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t offset = row * d;
  LayerNormSums sums =
      layer_norm_backward_partial(grad_out + offset, x + offset, gamma, mean[row], rstd[row], d, lane, kWarpSize);
  sums.g = warp_sum(sums.g);
  sums.g_normalized = warp_sum(sums.g_normalized);
  layer_norm_backward_apply(grad_x + offset, grad_out + offset, x + offset, gamma, mean[row], rstd[row], sums, d, lane,
                            kWarpSize);
}

// grad_gamma = Σ_rows dy ⊙ x̂, grad_beta = Σ_rows dy, in double, 32 columns per block.
__global__ void layer_norm_parameter_grads_kernel(float* grad_gamma, float* grad_beta, const float* grad_out,
                                                  const float* x, const float* mean, const float* rstd, int64_t rows,
                                                  int64_t d) {
  __shared__ double gamma_partials[kReduceRowLanes][kReduceColumns];
  __shared__ double beta_partials[kReduceRowLanes][kReduceColumns];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kReduceColumns + threadIdx.x;
  double gamma_total = 0.0, beta_total = 0.0;
  if (col < d) {
    for (int64_t row = threadIdx.y; row < rows; row += kReduceRowLanes) {
      const float gy = grad_out[row * d + col];
      gamma_total += gy * ((x[row * d + col] - mean[row]) * rstd[row]);
      beta_total += gy;
    }
  }
  gamma_partials[threadIdx.y][threadIdx.x] = gamma_total;
  beta_partials[threadIdx.y][threadIdx.x] = beta_total;
  __syncthreads();
  if (threadIdx.y != 0 || col >= d) return;
  gamma_total = beta_total = 0.0;
  for (int lane = 0; lane < kReduceRowLanes; ++lane) {
    gamma_total += gamma_partials[lane][threadIdx.x];
    beta_total += beta_partials[lane][threadIdx.x];
  }
  grad_gamma[col] = static_cast<float>(gamma_total);
  grad_beta[col] = static_cast<float>(beta_total);
}

// ---- kernels: RMS norm ----------------------------------------------------------------------------------------------

__global__ void rms_norm_forward_kernel(float* out, float* rstd, const float* x, const float* weight, float eps,
                                        int64_t rows, int64_t d) {
  const int64_t row = warp_row(rows);
  if (row < 0) return;
  const int lane = threadIdx.x % kWarpSize;
  const float* x_row = x + row * d;
  const float row_rstd = rms_norm_rstd(warp_sum(strided_dot(x_row, x_row, d, lane, kWarpSize)), d, eps);
  rms_norm_apply(out + row * d, x_row, weight, row_rstd, d, lane, kWarpSize);
  if (lane == 0) rstd[row] = row_rstd;
}

__global__ void rms_norm_backward_kernel(float* grad_x, const float* grad_out, const float* x, const float* weight,
                                         const float* rstd, int64_t rows, int64_t d) {
  const int64_t row = warp_row(rows);
  if (row < 0) return;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t offset = row * d;
  const double sum_g_x = warp_sum(rms_norm_backward_partial(grad_out + offset, x + offset, weight, d, lane, kWarpSize));
  rms_norm_backward_apply(grad_x + offset, grad_out + offset, x + offset, weight, rstd[row], sum_g_x, d, lane,
                          kWarpSize);
}

// grad_weight = Σ_rows dy ⊙ x̂ in double, 32 columns per block, row lanes combined in lane order.
__global__ void rms_norm_weight_grad_kernel(float* grad_weight, const float* grad_out, const float* x,
                                            const float* rstd, int64_t rows, int64_t d) {
  __shared__ double partials[kReduceRowLanes][kReduceColumns];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kReduceColumns + threadIdx.x;
  double total = 0.0;
  if (col < d) {
    for (int64_t row = threadIdx.y; row < rows; row += kReduceRowLanes) {
      total += grad_out[row * d + col] * (x[row * d + col] * rstd[row]);
    }
  }
  partials[threadIdx.y][threadIdx.x] = total;
  __syncthreads();
  if (threadIdx.y != 0 || col >= d) return;
  total = 0.0;
  for (int lane = 0; lane < kReduceRowLanes; ++lane) total += partials[lane][threadIdx.x];
  grad_weight[col] = static_cast<float>(total);
}

// ---- kernels: softmax -----------------------------------------------------------------------------------------------

__global__ void softmax_forward_kernel(float* out, const float* x, const float* mask, int64_t rows,
                                       int64_t rows_per_batch, int64_t d) {
  const int64_t row = warp_row(rows);
  if (row < 0) return;
  const int lane = threadIdx.x % kWarpSize;
  const float* x_row = x + row * d;
  const float* mask_row = mask == nullptr ? nullptr : mask + (row / rows_per_batch) * d;
  float* out_row = out + row * d;
  const float max = warp_max(strided_masked_max(x_row, mask_row, d, lane, kWarpSize));
  const double total = warp_sum(softmax_exp_partial(out_row, x_row, mask_row, max, d, lane, kWarpSize));
  scale_strided(out_row, softmax_normalizer(total), d, lane, kWarpSize);  // each lane rescales what it wrote
}

__global__ void softmax_backward_kernel(float* grad_x, const float* out, const float* grad_out, int64_t rows,
                                        int64_t d) {
  const int64_t row = warp_row(rows);
  if (row < 0) return;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t offset = row * d;
  const float dot = static_cast<float>(warp_sum(strided_dot(grad_out + offset, out + offset, d, lane, kWarpSize)));
  softmax_backward_apply(grad_x + offset, out + offset, grad_out + offset, dot, d, lane, kWarpSize);
}

// ---- kernels: cross-entropy -----------------------------------------------------------------------------------------

__global__ void cross_entropy_rows_kernel(float* row_losses, const float* logits, const int32_t* labels,
                                          int32_t ignore_index, int64_t rows, int64_t c) {
  const int64_t row = warp_row(rows);
  if (row < 0) return;
  const int lane = threadIdx.x % kWarpSize;
  if (labels[row] == ignore_index) {
    if (lane == 0) row_losses[row] = 0.0f;
    return;
  }
  const float* logits_row = logits + row * c;
  const float max = warp_max(strided_masked_max(logits_row, nullptr, c, lane, kWarpSize));
  const double exp_sum = warp_sum(strided_exp_sum(logits_row, max, c, lane, kWarpSize));
  if (lane == 0) row_losses[row] = cross_entropy_row_loss(max, exp_sum, logits_row[labels[row]]);
}

// One block: the row losses summed in double in a fixed order, over the counted rows.
__global__ void cross_entropy_mean_kernel(float* loss, const float* row_losses, const int32_t* labels,
                                          int32_t ignore_index, int64_t rows) {
  __shared__ double scratch[kRowThreads / kWarpSize];
  double total = 0.0, count = 0.0;
  for (int64_t row = threadIdx.x; row < rows; row += blockDim.x) {
    total += row_losses[row];
    count += labels[row] != ignore_index ? 1.0 : 0.0;
  }
  total = block_sum(total, scratch);
  count = block_sum(count, scratch);
  if (threadIdx.x == 0) *loss = count == 0.0 ? 0.0f : static_cast<float>(total / count);
}

// One block: row_scale = grad_loss / counted rows (0 when none).
__global__ void cross_entropy_scale_kernel(float* row_scale, const int32_t* labels, int32_t ignore_index,
                                           float grad_loss, int64_t rows) {
  __shared__ double scratch[kRowThreads / kWarpSize];
  double count = 0.0;
  for (int64_t row = threadIdx.x; row < rows; row += blockDim.x) count += labels[row] != ignore_index ? 1.0 : 0.0;
  count = block_sum(count, scratch);
  if (threadIdx.x == 0) *row_scale = count == 0.0 ? 0.0f : static_cast<float>(grad_loss / count);
}

__global__ void cross_entropy_backward_kernel(float* grad_logits, const float* row_scale, const float* logits,
                                              const int32_t* labels, int32_t ignore_index, int64_t rows, int64_t c) {
  const int64_t row = warp_row(rows);
  if (row < 0) return;
  const int lane = threadIdx.x % kWarpSize;
  float* grad_row = grad_logits + row * c;
  if (labels[row] == ignore_index) {
    for (int64_t j = lane; j < c; j += kWarpSize) grad_row[j] = 0.0f;
    return;
  }
  const float* logits_row = logits + row * c;
  const float max = warp_max(strided_masked_max(logits_row, nullptr, c, lane, kWarpSize));
  const double exp_sum = warp_sum(strided_exp_sum(logits_row, max, c, lane, kWarpSize));
  cross_entropy_backward_apply(grad_row, logits_row, max, exp_sum, *row_scale, labels[row], c, lane, kWarpSize);
}

// ---- kernels: embedding ---------------------------------------------------------------------------------------------

__global__ void embedding_forward_kernel(float* out, WeightView weight, const int32_t* ids, int64_t n, int64_t d) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < n * d;
       index += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[index] = weight_at(weight, static_cast<int64_t>(ids[index / d]) * d + index % d);
  }
}

// Block (id, column chunk): the id's positions added in ascending order; rows no position uses get zeros.
__global__ void embedding_backward_kernel(float* grad_weight, const float* grad_out, const int32_t* order,
                                          const int32_t* row_start, int64_t d) {
  const int64_t id = blockIdx.x;
  const int64_t col = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (col >= d) return;
  float total = 0.0f;
  for (int32_t slot = row_start[id]; slot < row_start[id + 1]; ++slot) {
    total += grad_out[static_cast<int64_t>(order[slot]) * d + col];
  }
  grad_weight[id * d + col] = total;
}

}  // namespace

// ---- launchers ------------------------------------------------------------------------------------------------------

void gelu_forward(float* out, const float* x, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  gelu_forward_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(out, x, n);
}

void gelu_backward(float* grad_x, const float* x, const float* grad_out, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  gelu_backward_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(grad_x, x, grad_out, n);
}

void layer_norm_forward(float* out, float* mean, float* rstd, const float* x, const float* gamma, const float* beta,
                        float eps, int64_t rows, int64_t d, cudaStream_t stream) {
  if (rows == 0) return;
  layer_norm_forward_kernel<<<row_kernel_blocks(rows), kRowThreads, 0, stream>>>(out, mean, rstd, x, gamma, beta, eps,
                                                                                 rows, d);
}

void layer_norm_backward(float* grad_x, float* grad_gamma, float* grad_beta, const float* grad_out, const float* x,
                         const float* gamma, const float* mean, const float* rstd, int64_t rows, int64_t d,
                         cudaStream_t stream) {
  if (d == 0) return;
  if (rows > 0) {
    layer_norm_backward_kernel<<<row_kernel_blocks(rows), kRowThreads, 0, stream>>>(grad_x, grad_out, x, gamma, mean,
                                                                                    rstd, rows, d);
  }
  const dim3 block(kReduceColumns, kReduceRowLanes);
  layer_norm_parameter_grads_kernel<<<static_cast<unsigned>(ceil_div(d, kReduceColumns)), block, 0, stream>>>(
      grad_gamma, grad_beta, grad_out, x, mean, rstd, rows, d);
}

void rms_norm_forward(float* out, float* rstd, const float* x, const float* weight, float eps, int64_t rows, int64_t d,
                      cudaStream_t stream) {
  if (rows == 0) return;
  rms_norm_forward_kernel<<<row_kernel_blocks(rows), kRowThreads, 0, stream>>>(out, rstd, x, weight, eps, rows, d);
}

void rms_norm_backward(float* grad_x, float* grad_weight, const float* grad_out, const float* x, const float* weight,
                       const float* rstd, int64_t rows, int64_t d, cudaStream_t stream) {
  if (d == 0) return;
  if (rows > 0) {
    rms_norm_backward_kernel<<<row_kernel_blocks(rows), kRowThreads, 0, stream>>>(grad_x, grad_out, x, weight, rstd,
                                                                                  rows, d);
  }
  const dim3 block(kReduceColumns, kReduceRowLanes);
  rms_norm_weight_grad_kernel<<<static_cast<unsigned>(ceil_div(d, kReduceColumns)), block, 0, stream>>>(
      grad_weight, grad_out, x, rstd, rows, d);
}

void softmax_forward(float* out, const float* x, const float* mask, int64_t batch, int64_t rows_per_batch, int64_t d,
                     cudaStream_t stream) {
  const int64_t rows = batch * rows_per_batch;
  if (rows == 0 || d == 0) return;
  softmax_forward_kernel<<<row_kernel_blocks(rows), kRowThreads, 0, stream>>>(out, x, mask, rows, rows_per_batch, d);
}

void softmax_backward(float* grad_x, const float* out, const float* grad_out, int64_t rows, int64_t d,
                      cudaStream_t stream) {
  if (rows == 0 || d == 0) return;
  softmax_backward_kernel<<<row_kernel_blocks(rows), kRowThreads, 0, stream>>>(grad_x, out, grad_out, rows, d);
}

void cross_entropy_forward(float* loss, float* row_losses, const float* logits, const int32_t* labels,
                           int32_t ignore_index, int64_t rows, int64_t c, cudaStream_t stream) {
  if (rows > 0) {
    cross_entropy_rows_kernel<<<row_kernel_blocks(rows), kRowThreads, 0, stream>>>(row_losses, logits, labels,
                                                                                   ignore_index, rows, c);
  }
  cross_entropy_mean_kernel<<<1, kRowThreads, 0, stream>>>(loss, row_losses, labels, ignore_index, rows);
}

void cross_entropy_backward(float* grad_logits, float* row_scale, const float* logits, const int32_t* labels,
                            int32_t ignore_index, float grad_loss, int64_t rows, int64_t c, cudaStream_t stream) {
  if (rows == 0) return;
  cross_entropy_scale_kernel<<<1, kRowThreads, 0, stream>>>(row_scale, labels, ignore_index, grad_loss, rows);
  cross_entropy_backward_kernel<<<row_kernel_blocks(rows), kRowThreads, 0, stream>>>(grad_logits, row_scale, logits,
                                                                                     labels, ignore_index, rows, c);
}

void embedding_forward(float* out, WeightView weight, const int32_t* ids, int64_t n, int64_t d, cudaStream_t stream) {
  if (n * d == 0) return;
  embedding_forward_kernel<<<elementwise_blocks(n * d), kElementwiseThreads, 0, stream>>>(out, weight, ids, n, d);
}

void embedding_backward(float* grad_weight, const float* grad_out, const int32_t* order, const int32_t* row_start,
                        int64_t v, int64_t d, cudaStream_t stream) {
  if (v == 0 || d == 0) return;
  const dim3 grid(static_cast<unsigned>(v), static_cast<unsigned>(ceil_div(d, kElementwiseThreads)));
  embedding_backward_kernel<<<grid, kElementwiseThreads, 0, stream>>>(grad_weight, grad_out, order, row_start, d);
}

}  // namespace bidora::cuda
