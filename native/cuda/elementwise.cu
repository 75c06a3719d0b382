// Elementwise arithmetic on contiguous float arrays (grid-stride loops, b broadcast every `period` elements of a),
// ReLU, tanh, GELU's tanh form, SiLU and SwiGLU, dropout with the CPU's counter-based mask, the mean squared error, BCE
// with logits and rotary position embeddings (their per-element rules shared with the CPU in
// ../common/position_math.h).
#include "../common/position_math.h"
#include "cuda_ops.h"
#include "device_common.cuh"
#include "random_math.cuh"

namespace bidora::cuda {

namespace {

enum class Binary { kAdd, kSub, kMul };

// ---- kernels --------------------------------------------------------------------------------------------------------

template <Binary kOp>
__global__ void binary_kernel(float* out, const float* a, const float* b, int64_t n, int64_t period) {
  grid_stride(n, [&](int64_t index) {
    const float other = b[period == n ? index : index % period];
    out[index] = kOp == Binary::kAdd ? a[index] + other : kOp == Binary::kSub ? a[index] - other : a[index] * other;
  });
}

__global__ void scale_kernel(float* out, const float* a, float alpha, int64_t n) {
  grid_stride(n, [&](int64_t index) { out[index] = alpha * a[index]; });
}

__global__ void axpy_kernel(float* y, float alpha, const float* x, int64_t n) {
  grid_stride(n, [&](int64_t index) { y[index] += alpha * x[index]; });
}

__global__ void relu_forward_kernel(float* out, const float* x, int64_t n) {
  grid_stride(n, [&](int64_t index) { out[index] = relu(x[index]); });
}

__global__ void relu_backward_kernel(float* grad_x, const float* x, const float* grad_out, int64_t n) {
  grid_stride(n, [&](int64_t index) { grad_x[index] = relu_backward(x[index], grad_out[index]); });
}

__global__ void tanh_forward_kernel(float* out, const float* x, int64_t n) {
  grid_stride(n, [&](int64_t index) { out[index] = tanh_approx(x[index]); });
}

__global__ void tanh_backward_kernel(float* grad_x, const float* out, const float* grad_out, int64_t n) {
  grid_stride(n, [&](int64_t index) { grad_x[index] = tanh_backward(out[index], grad_out[index]); });
}

__global__ void gelu_tanh_forward_kernel(float* out, const float* x, int64_t n) {
  grid_stride(n, [&](int64_t index) { out[index] = gelu_tanh(x[index]); });
}

__global__ void gelu_tanh_backward_kernel(float* grad_x, const float* x, const float* grad_out, int64_t n) {
  grid_stride(n, [&](int64_t index) { grad_x[index] = gelu_tanh_backward(x[index], grad_out[index]); });
}

__global__ void silu_forward_kernel(float* out, const float* x, int64_t n) {
  grid_stride(n, [&](int64_t index) { out[index] = silu(x[index]); });
}

__global__ void silu_backward_kernel(float* grad_x, const float* x, const float* grad_out, int64_t n) {
  grid_stride(n, [&](int64_t index) { grad_x[index] = silu_backward(x[index], grad_out[index]); });
}

__global__ void swiglu_forward_kernel(float* out, const float* gate, const float* up, int64_t n) {
  grid_stride(n, [&](int64_t index) { out[index] = swiglu(gate[index], up[index]); });
}

__global__ void swiglu_backward_kernel(float* grad_gate, float* grad_up, const float* gate, const float* up,
                                       const float* grad_out, int64_t n) {
  grid_stride(n, [&](int64_t index) {
    grad_gate[index] = swiglu_backward_gate(gate[index], up[index], grad_out[index]);
    grad_up[index] = swiglu_backward_up(gate[index], grad_out[index]);
  });
}

// in == nullptr: the scale itself (keep / (1 − p)), as the fused adapter kernels take it.
__global__ void dropout_kernel(float* out, const float* in, int64_t n, uint64_t key, uint64_t threshold,
                               float keep_scale) {
  grid_stride(n, [&](int64_t index) {
    const float value = in == nullptr ? 1.0f : in[index];
    out[index] = dropout_keeps(key, index, threshold) ? value * keep_scale : 0.0f;
  });
}

constexpr int kLossThreads = 256;

// One block: strided partial sums in double, combined by the fixed block tree.
__global__ void mse_loss_forward_kernel(float* loss, const float* prediction, const float* target, int64_t n) {
  __shared__ double scratch[kLossThreads / kWarpSize];
  double partial = 0.0;
  for (int64_t index = threadIdx.x; index < n; index += blockDim.x) {
    const double difference = static_cast<double>(prediction[index]) - target[index];
    partial += difference * difference;
  }
  const double total = block_sum(partial, scratch);
  if (threadIdx.x == 0) *loss = n == 0 ? 0.0f : static_cast<float>(total / static_cast<double>(n));
}

__global__ void mse_loss_backward_kernel(float* grad_prediction, const float* prediction, const float* target,
                                         float factor, int64_t n) {
  grid_stride(n, [&](int64_t index) { grad_prediction[index] = factor * (prediction[index] - target[index]); });
}

__global__ void bce_with_logits_forward_kernel(float* loss, const float* logits, const float* targets, int64_t n) {
  __shared__ double scratch[kLossThreads / kWarpSize];
  double partial = 0.0;
  for (int64_t index = threadIdx.x; index < n; index += blockDim.x) {
    partial += math::bce_with_logits_term(logits[index], targets[index]);
  }
  const double total = block_sum(partial, scratch);
  if (threadIdx.x == 0) *loss = n == 0 ? 0.0f : static_cast<float>(total / static_cast<double>(n));
}

__global__ void bce_with_logits_backward_kernel(float* grad_logits, const float* logits, const float* targets,
                                                float factor, int64_t n) {
  grid_stride(n, [&](int64_t index) {
    grad_logits[index] = factor * math::bce_with_logits_gradient(logits[index], targets[index]);
  });
}

// One thread per pair of one (token, head) row: element index = ((b·heads + h)·seq + s)·half + pair.
__global__ void rotary_kernel(float* out, const float* x, const int32_t* positions, int64_t batch, int64_t heads,
                              int64_t seq, int64_t d, float base, bool inverse) {
  const int64_t half = d / 2;
  grid_stride(batch * heads * seq * half, [&](int64_t index) {
    const int64_t pair = index % half;
    const int64_t row = index / half;  // (b·heads + h)·seq + s
    const int64_t s = row % seq;
    const int64_t b = row / (seq * heads);
    const float angle = static_cast<float>(positions[b * seq + s]) * math::rotary_inverse_frequency(pair, d, base);
    const int64_t offset = row * d + pair;
    math::rotate_pair(x[offset], x[offset + half], angle, inverse, &out[offset], &out[offset + half]);
  });
}

}  // namespace

// ---- launchers ------------------------------------------------------------------------------------------------------

void add(float* out, const float* a, const float* b, int64_t n, int64_t period, cudaStream_t stream) {
  if (n == 0) return;
  binary_kernel<Binary::kAdd><<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(out, a, b, n, period);
}

void sub(float* out, const float* a, const float* b, int64_t n, int64_t period, cudaStream_t stream) {
  if (n == 0) return;
  binary_kernel<Binary::kSub><<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(out, a, b, n, period);
}

void mul(float* out, const float* a, const float* b, int64_t n, int64_t period, cudaStream_t stream) {
  if (n == 0) return;
  binary_kernel<Binary::kMul><<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(out, a, b, n, period);
}

void scale(float* out, const float* a, float alpha, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  scale_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(out, a, alpha, n);
}

void axpy(float* y, float alpha, const float* x, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  axpy_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(y, alpha, x, n);
}

void relu_forward(float* out, const float* x, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  relu_forward_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(out, x, n);
}

void relu_backward(float* grad_x, const float* x, const float* grad_out, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  relu_backward_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(grad_x, x, grad_out, n);
}

void tanh_forward(float* out, const float* x, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  tanh_forward_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(out, x, n);
}

void tanh_backward(float* grad_x, const float* out, const float* grad_out, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  tanh_backward_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(grad_x, out, grad_out, n);
}

void gelu_tanh_forward(float* out, const float* x, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  gelu_tanh_forward_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(out, x, n);
}

void gelu_tanh_backward(float* grad_x, const float* x, const float* grad_out, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  gelu_tanh_backward_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(grad_x, x, grad_out, n);
}

void silu_forward(float* out, const float* x, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  silu_forward_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(out, x, n);
}

void silu_backward(float* grad_x, const float* x, const float* grad_out, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  silu_backward_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(grad_x, x, grad_out, n);
}

void swiglu_forward(float* out, const float* gate, const float* up, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  swiglu_forward_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(out, gate, up, n);
}

void swiglu_backward(float* grad_gate, float* grad_up, const float* gate, const float* up, const float* grad_out,
                     int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  swiglu_backward_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(grad_gate, grad_up, gate, up,
                                                                                    grad_out, n);
}

void dropout(float* out, const float* in, int64_t n, float p, uint64_t seed, cudaStream_t stream) {
  if (n == 0) return;
  dropout_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(
      out, in, n, dropout_key(seed), dropout_threshold(p), dropout_keep_scale(p));
}

void mse_loss_forward(float* loss, const float* prediction, const float* target, int64_t n, cudaStream_t stream) {
  mse_loss_forward_kernel<<<1, kLossThreads, 0, stream>>>(loss, prediction, target, n);
}

void mse_loss_backward(float* grad_prediction, const float* prediction, const float* target, float grad_loss, int64_t n,
                       cudaStream_t stream) {
  if (n == 0) return;
  // The factor as the CPU forms it: in double, rounded once.
  const float factor = static_cast<float>(2.0 * grad_loss / static_cast<double>(n));
  mse_loss_backward_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(grad_prediction, prediction,
                                                                                      target, factor, n);
}

void bce_with_logits_forward(float* loss, const float* logits, const float* targets, int64_t n, cudaStream_t stream) {
  bce_with_logits_forward_kernel<<<1, kLossThreads, 0, stream>>>(loss, logits, targets, n);
}

void bce_with_logits_backward(float* grad_logits, const float* logits, const float* targets, float grad_loss, int64_t n,
                              cudaStream_t stream) {
  if (n == 0) return;
  const float factor = static_cast<float>(grad_loss / static_cast<double>(n));
  bce_with_logits_backward_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(grad_logits, logits,
                                                                                             targets, factor, n);
}

void rotary(float* out, const float* x, const int32_t* positions, int64_t batch, int64_t heads, int64_t seq, int64_t d,
            float base, bool inverse, cudaStream_t stream) {
  const int64_t pairs = batch * heads * seq * (d / 2);
  if (pairs == 0) return;
  rotary_kernel<<<elementwise_blocks(pairs), kElementwiseThreads, 0, stream>>>(out, x, positions, batch, heads, seq, d,
                                                                               base, inverse);
}

}  // namespace bidora::cuda
