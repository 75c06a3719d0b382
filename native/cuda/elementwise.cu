// Elementwise arithmetic on contiguous float arrays: grid-stride loops, b broadcast every `period` elements of a.
#include "cuda_ops.h"
#include "device_common.cuh"

namespace bidora::cuda {

namespace {

enum class Binary { kAdd, kSub, kMul };

// ---- kernels --------------------------------------------------------------------------------------------------------

template <Binary kOp>
__global__ void binary_kernel(float* out, const float* a, const float* b, int64_t n, int64_t period) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < n;
       index += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float other = b[period == n ? index : index % period];
    out[index] = kOp == Binary::kAdd ? a[index] + other : kOp == Binary::kSub ? a[index] - other : a[index] * other;
  }
}

__global__ void scale_kernel(float* out, const float* a, float alpha, int64_t n) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < n;
       index += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[index] = alpha * a[index];
  }
}

__global__ void axpy_kernel(float* y, float alpha, const float* x, int64_t n) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < n;
       index += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[index] += alpha * x[index];
  }
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

}  // namespace bidora::cuda
