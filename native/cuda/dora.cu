// The fused DoRA and LoRA layer on the GPU: forward and backward side by side, the factored row norm, no [M,K]
// buffer. The products go through gemm(); the per-row and per-column steps are the kernels here, their math in
// dora_math.cuh. Same formulas, same order of operations as native/cpu/dora.cc.
//
// Legend: N tokens, K in-features, M out-features, R rank. W0 [M,K], A [R,K], B [M,R], m [M], scale s.
//   LoRA: y = x W0ᵀ + s (x_d Aᵀ) Bᵀ + bias;  DoRA: y = (m / n) ⊙ (x W0ᵀ + s (x_d Aᵀ) Bᵀ) + bias.
#include <algorithm>

#include "cuda_ops.h"
#include "device_common.cuh"
#include "dora_math.cuh"

namespace bidora::cuda {

namespace {

// Columns per block of the column reductions, and row lanes per column (each lane sums every 16th row in order).
constexpr int kReduceColumns = 32, kReduceRowLanes = 16;
constexpr int kSplitKLayers = 16;  // at most split_k_count's cap

// The scratch of one adapter call, carved from the caller's workspace in this order.
struct AdapterScratch {
  double* column_dots;      // [M] Σ_i gy_ij u_ij
  float* norm_coefficient;  // [M] c_j
  float* grad_hidden;       // [N,R]
  float* scaled_lora_b;     // [M,R] c ⊙ B
  float* small;             // [R,R] (cB)ᵀ B
  GemmScratch gemm;         // split-K layers of the skinny products
};

size_t align_up(size_t bytes) { return (bytes + 255) / 256 * 256; }

int64_t split_k_floats(const AdapterDims& dims) {
  const auto [n, k, m, r] = dims;
  return kSplitKLayers * std::max({n * r, m * r, r * k, r * r});
}

AdapterScratch carve(void* workspace, const AdapterDims& dims) {
  const auto [n, k, m, r] = dims;
  char* cursor = static_cast<char*>(workspace);
  auto take = [&](size_t bytes) {
    char* start = cursor;
    cursor += align_up(bytes);
    return start;
  };
  AdapterScratch scratch;
  scratch.column_dots = reinterpret_cast<double*>(take(sizeof(double) * m));
  scratch.norm_coefficient = reinterpret_cast<float*>(take(sizeof(float) * m));
  scratch.grad_hidden = reinterpret_cast<float*>(take(sizeof(float) * n * r));
  scratch.scaled_lora_b = reinterpret_cast<float*>(take(sizeof(float) * m * r));
  scratch.small = reinterpret_cast<float*>(take(sizeof(float) * r * r));
  const int64_t gemm_floats = split_k_floats(dims);
  scratch.gemm = {reinterpret_cast<float*>(take(sizeof(float) * gemm_floats)), static_cast<size_t>(gemm_floats)};
  return scratch;
}

// ---- kernels --------------------------------------------------------------------------------------------------------

// One warp per row, in double like the CPU (the norm's largest term).
__global__ void row_sq_norms_kernel(float* out, WeightView weight, int64_t m, int64_t k) {
  const int64_t row = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= m) return;
  double total = 0.0;
  for (int64_t col = lane; col < k; col += kWarpSize) {
    const double value = weight_at(weight, row * k + col);
    total += value * value;
  }
  total = warp_sum(total);
  if (lane == 0) out[row] = static_cast<float>(total);
}

__global__ void dora_norm_kernel(float* norm, const float* weight_lora_a, const float* lora_gram,
                                 const float* weight_sq_norms, const float* lora_b, float scale, float eps, int64_t m,
                                 int64_t r) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (row >= m) return;
  norm[row] = dora_row_norm(weight_lora_a + row * r, lora_gram, lora_b + row * r, weight_sq_norms[row], scale, eps, r);
}

// out[i, j] = gain_j u[i, j] + bias_j, gain = m / n (magnitude null: 1), bias nullable; in place when out == u.
__global__ void compose_kernel(float* output, const float* combined, const float* magnitude, const float* norm,
                               const float* bias, int64_t rows, int64_t cols) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < rows * cols;
       index += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t col = index % cols;
    const float gain = magnitude == nullptr ? 1.0f : magnitude[col] / norm[col];
    output[index] = gain * combined[index] + (bias == nullptr ? 0.0f : bias[col]);
  }
}

// For a block of 32 columns: Σ_i gy_ij (into grad_bias, nullable), Σ_i gy_ij u_ij in double (into column_dots,
// nullable, DoRA), and u <- gy ⊙ (m / n) in place (combined nullable). Each of the 16 row lanes sums rows lane,
// lane + 16, ... in order; lane totals are added in lane order: the same bits on every run.
__global__ void column_reduce_kernel(float* grad_bias, double* column_dots, float* combined, const float* grad_output,
                                     const float* magnitude, const float* norm, int64_t rows, int64_t cols) {
  __shared__ double sums[kReduceRowLanes][kReduceColumns];
  __shared__ double dots[kReduceRowLanes][kReduceColumns];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kReduceColumns + threadIdx.x;
  const bool live = col < cols;
  const float gain = live && combined != nullptr ? magnitude[col] / norm[col] : 0.0f;
  double sum = 0.0, dot = 0.0;
  if (live) {
    for (int64_t row = threadIdx.y; row < rows; row += kReduceRowLanes) {
      const float gy = grad_output[row * cols + col];
      sum += gy;
      if (combined != nullptr) {
        float* u = combined + row * cols + col;
        dot += static_cast<double>(gy) * *u;
        *u = gy * gain;
      }
    }
  }
  sums[threadIdx.y][threadIdx.x] = sum;
  dots[threadIdx.y][threadIdx.x] = dot;
  __syncthreads();
  if (threadIdx.y != 0 || !live) return;
  double total_sum = 0.0, total_dot = 0.0;
  for (int lane = 0; lane < kReduceRowLanes; ++lane) {
    total_sum += sums[lane][threadIdx.x];
    total_dot += dots[lane][threadIdx.x];
  }
  if (grad_bias != nullptr) grad_bias[col] = static_cast<float>(total_sum);
  if (column_dots != nullptr) column_dots[col] = total_dot;
}

// dL/dm_j = Σ gy u / n_j, and the norm coefficient c_j (dora_math.cuh) when the gradient goes through the norm.
__global__ void dora_row_grads_kernel(float* grad_magnitude, float* norm_coefficient, const double* column_dots,
                                      const float* magnitude, const float* norm, float eps, int64_t m) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (row >= m) return;
  if (grad_magnitude != nullptr) grad_magnitude[row] = static_cast<float>(column_dots[row] / norm[row]);
  if (norm_coefficient != nullptr) {
    norm_coefficient[row] = dora_norm_coefficient(magnitude[row], column_dots[row], norm[row], eps);
  }
}

// grad_B += s c_j (V Aᵀ)_j, and scaled_b = c ⊙ B for the lora_a term (nullable).
__global__ void dora_lora_b_norm_kernel(float* grad_lora_b, float* scaled_lora_b, const float* norm_coefficient,
                                        const float* weight_lora_a, const float* lora_gram, const float* lora_b,
                                        float scale, int64_t m, int64_t r) {
  const int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (index >= m * r) return;
  const int64_t row = index / r, p = index % r;
  if (grad_lora_b != nullptr) {
    grad_lora_b[index] +=
        dora_lora_b_norm_term(weight_lora_a + row * r, lora_gram, lora_b + row * r, norm_coefficient[row], scale, p, r);
  }
  if (scaled_lora_b != nullptr) scaled_lora_b[index] = norm_coefficient[row] * lora_b[index];
}

// grad_input += dropout_scale ⊙ (s gh A): the branch's input gradient through dropout, R-deep dots formed here so
// no [N,K] buffer is needed.
__global__ void dropout_branch_kernel(float* grad_input, const float* grad_hidden, const float* lora_a,
                                      const float* dropout_scale, float scale, int64_t n, int64_t k, int64_t r) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < n * k;
       index += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = index / k, col = index % k;
    float total = 0.0f;
    for (int64_t p = 0; p < r; ++p) total += grad_hidden[row * r + p] * lora_a[p * k + col];
    grad_input[index] += dropout_scale[index] * scale * total;
  }
}

unsigned row_blocks(int64_t rows) { return static_cast<unsigned>(ceil_div(std::max<int64_t>(rows, 1), 256)); }

// grad_input = ĝ W0 + s gh A (through dropout when the branch saw a dropped input).
void input_gradient(float* grad_input, const float* grad_combined, const float* grad_hidden, WeightView weight,
                    const float* lora_a, const float* dropout_scale, float scale, const AdapterDims& dims,
                    GemmPrecision precision, GemmScratch gemm_scratch, cudaStream_t stream) {
  const auto [n, k, m, r] = dims;
  gemm(grad_input, float32(grad_combined), false, weight, false, n, k, m, 1.0f, 0.0f, precision, gemm_scratch, stream);
  if (dropout_scale == nullptr) {
    gemm(grad_input, grad_hidden, false, lora_a, false, n, k, r, scale, 1.0f, precision, gemm_scratch, stream);
  } else {
    dropout_branch_kernel<<<elementwise_blocks(n * k), kElementwiseThreads, 0, stream>>>(
        grad_input, grad_hidden, lora_a, dropout_scale, scale, n, k, r);
  }
}

}  // namespace

// ---- launchers ------------------------------------------------------------------------------------------------------

size_t adapter_workspace_bytes(const AdapterDims& dims) {
  const auto [n, k, m, r] = dims;
  return align_up(sizeof(double) * m) + align_up(sizeof(float) * m) + align_up(sizeof(float) * n * r) +
         align_up(sizeof(float) * m * r) + align_up(sizeof(float) * r * r) +
         align_up(sizeof(float) * split_k_floats(dims));
}

void row_sq_norms(float* out, WeightView weight, int64_t m, int64_t k, cudaStream_t stream) {
  if (m == 0) return;
  constexpr int kRowsPerBlock = 8;
  row_sq_norms_kernel<<<static_cast<unsigned>(ceil_div(m, kRowsPerBlock)), kRowsPerBlock * kWarpSize, 0, stream>>>(
      out, weight, m, k);
}

void dora_norm(float* norm, float* weight_lora_a, float* lora_gram, WeightView weight, const float* weight_sq_norms,
               const float* lora_a, const float* lora_b, float scale, float eps, const AdapterDims& dims,
               void* workspace, cudaStream_t stream) {
  const auto [n, k, m, r] = dims;
  const AdapterScratch scratch = carve(workspace, dims);
  const auto f32 = GemmPrecision::kFloat32;
  gemm(weight_lora_a, weight, false, float32(lora_a), true, m, r, k, 1.0f, 0.0f, f32, scratch.gemm, stream);  // W0 Aᵀ
  gemm(lora_gram, lora_a, false, lora_a, true, r, r, k, 1.0f, 0.0f, f32, scratch.gemm, stream);               // A Aᵀ
  if (m == 0) return;
  dora_norm_kernel<<<row_blocks(m), 256, 0, stream>>>(norm, weight_lora_a, lora_gram, weight_sq_norms, lora_b, scale,
                                                      eps, m, r);
}

void dora_forward(float* output, float* combined, float* hidden, float* norm, float* weight_lora_a, float* lora_gram,
                  const float* input, const float* lora_input, WeightView weight, const float* weight_sq_norms,
                  const float* bias, const float* lora_a, const float* lora_b, const float* magnitude, float scale,
                  float eps, const AdapterDims& dims, GemmPrecision precision, void* workspace, cudaStream_t stream) {
  const auto [n, k, m, r] = dims;
  const AdapterScratch scratch = carve(workspace, dims);
  dora_norm(norm, weight_lora_a, lora_gram, weight, weight_sq_norms, lora_a, lora_b, scale, eps, dims, workspace,
            stream);
  gemm(hidden, lora_input, false, lora_a, true, n, r, k, 1.0f, 0.0f, precision, scratch.gemm, stream);  // h = x_d Aᵀ
  gemm(combined, float32(input), false, weight, true, n, m, k, 1.0f, 0.0f, precision, scratch.gemm, stream);  // x W0ᵀ
  gemm(combined, hidden, false, lora_b, true, n, m, r, scale, 1.0f, precision, scratch.gemm, stream);  // + s h Bᵀ
  if (n * m == 0) return;
  compose_kernel<<<elementwise_blocks(n * m), kElementwiseThreads, 0, stream>>>(output, combined, magnitude, norm, bias,
                                                                                n, m);
}

void dora_backward(const AdapterGrads& grads, float* combined, const float* grad_output, const float* lora_input,
                   const float* dropout_scale, WeightView weight, const float* lora_a, const float* lora_b,
                   const float* magnitude, const float* norm, const float* hidden, const float* weight_lora_a,
                   const float* lora_gram, float scale, float eps, bool detach_norm, const AdapterDims& dims,
                   GemmPrecision precision, void* workspace, cudaStream_t stream) {
  const auto [n, k, m, r] = dims;
  const AdapterScratch scratch = carve(workspace, dims);
  const auto f32 = GemmPrecision::kFloat32;

  // One pass over grad_output: Σ_i gy (bias), Σ_i gy u (magnitude and norm), and u <- ĝ = gy ⊙ (m / n).
  const dim3 reduce_block(kReduceColumns, kReduceRowLanes);
  const unsigned column_blocks = static_cast<unsigned>(ceil_div(std::max<int64_t>(m, 1), kReduceColumns));
  column_reduce_kernel<<<column_blocks, reduce_block, 0, stream>>>(grads.bias, scratch.column_dots, combined,
                                                                   grad_output, magnitude, norm, n, m);
  const float* grad_combined = combined;
  const bool through_norm = !detach_norm && (grads.lora_a != nullptr || grads.lora_b != nullptr);
  dora_row_grads_kernel<<<row_blocks(m), 256, 0, stream>>>(
      grads.magnitude, through_norm ? scratch.norm_coefficient : nullptr, scratch.column_dots, magnitude, norm, eps, m);

  if (grads.lora_a != nullptr || grads.input != nullptr) {
    gemm(scratch.grad_hidden, grad_combined, false, lora_b, false, n, r, m, 1.0f, 0.0f, precision, scratch.gemm,
         stream);  // ĝ B
  }
  if (grads.lora_b != nullptr) {
    gemm(grads.lora_b, grad_combined, true, hidden, false, m, r, n, scale, 0.0f, precision, scratch.gemm,
         stream);  // s ĝᵀ h
  }
  if (through_norm && m * r > 0) {
    // grad_B += s c_j (W0 Aᵀ + s B A Aᵀ)_j; scaled_b = c ⊙ B for dL/dA's share s Bᵀ diag(c) V.
    dora_lora_b_norm_kernel<<<static_cast<unsigned>(ceil_div(m * r, 256)), 256, 0, stream>>>(
        grads.lora_b, grads.lora_a != nullptr ? scratch.scaled_lora_b : nullptr, scratch.norm_coefficient,
        weight_lora_a, lora_gram, lora_b, scale, m, r);
  }
  if (grads.lora_a != nullptr) {
    gemm(grads.lora_a, scratch.grad_hidden, true, lora_input, false, r, k, n, scale, 0.0f, precision, scratch.gemm,
         stream);  // s ghᵀ x_d
    if (through_norm) {
      // + s Bᵀ diag(c) V = s (cB)ᵀ W0 + s² ((cB)ᵀ B) A, in float32 like the norm's factors.
      gemm(grads.lora_a, float32(scratch.scaled_lora_b), true, weight, false, r, k, m, scale, 1.0f, f32, scratch.gemm,
           stream);
      gemm(scratch.small, scratch.scaled_lora_b, true, lora_b, false, r, r, m, 1.0f, 0.0f, f32, scratch.gemm, stream);
      gemm(grads.lora_a, scratch.small, false, lora_a, false, r, k, r, scale * scale, 1.0f, f32, scratch.gemm, stream);
    }
  }
  if (grads.input != nullptr) {
    input_gradient(grads.input, grad_combined, scratch.grad_hidden, weight, lora_a, dropout_scale, scale, dims,
                   precision, scratch.gemm, stream);
  }
}

void lora_forward(float* output, float* hidden, const float* input, const float* lora_input, WeightView weight,
                  const float* bias, const float* lora_a, const float* lora_b, float scale, const AdapterDims& dims,
                  GemmPrecision precision, void* workspace, cudaStream_t stream) {
  const auto [n, k, m, r] = dims;
  const AdapterScratch scratch = carve(workspace, dims);
  gemm(hidden, lora_input, false, lora_a, true, n, r, k, 1.0f, 0.0f, precision, scratch.gemm, stream);
  gemm(output, float32(input), false, weight, true, n, m, k, 1.0f, 0.0f, precision, scratch.gemm, stream);
  gemm(output, hidden, false, lora_b, true, n, m, r, scale, 1.0f, precision, scratch.gemm, stream);
  if (bias != nullptr && n * m > 0) {  // y += bias, in place (gain 1)
    compose_kernel<<<elementwise_blocks(n * m), kElementwiseThreads, 0, stream>>>(output, output, nullptr, nullptr,
                                                                                  bias, n, m);
  }
}

void lora_backward(const AdapterGrads& grads, const float* grad_output, const float* lora_input,
                   const float* dropout_scale, WeightView weight, const float* lora_a, const float* lora_b,
                   const float* hidden, float scale, const AdapterDims& dims, GemmPrecision precision, void* workspace,
                   cudaStream_t stream) {
  const auto [n, k, m, r] = dims;
  const AdapterScratch scratch = carve(workspace, dims);
  if (grads.bias != nullptr && m > 0) {
    const dim3 reduce_block(kReduceColumns, kReduceRowLanes);
    column_reduce_kernel<<<static_cast<unsigned>(ceil_div(m, kReduceColumns)), reduce_block, 0, stream>>>(
        grads.bias, nullptr, nullptr, grad_output, nullptr, nullptr, n, m);
  }
  if (grads.lora_b != nullptr) {
    gemm(grads.lora_b, grad_output, true, hidden, false, m, r, n, scale, 0.0f, precision, scratch.gemm, stream);
  }
  if (grads.lora_a == nullptr && grads.input == nullptr) return;
  gemm(scratch.grad_hidden, grad_output, false, lora_b, false, n, r, m, 1.0f, 0.0f, precision, scratch.gemm, stream);
  if (grads.lora_a != nullptr) {
    gemm(grads.lora_a, scratch.grad_hidden, true, lora_input, false, r, k, n, scale, 0.0f, precision, scratch.gemm,
         stream);
  }
  if (grads.input != nullptr) {
    input_gradient(grads.input, grad_output, scratch.grad_hidden, weight, lora_a, dropout_scale, scale, dims, precision,
                   scratch.gemm, stream);
  }
}

}  // namespace bidora::cuda
