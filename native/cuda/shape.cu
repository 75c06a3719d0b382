// Reductions over an axis and the copies that move data between layouts: sum over one axis and its broadcast (the
// gradient of the sum), a range along an axis and its gradient, and the [a,b,c,d] → [a,c,b,d] head permute. Same
// contracts as native/cpu (elementwise.h, narrow.h, nn.h); the sums run in a fixed order, in double.
#include "cuda_ops.h"
#include "device_common.cuh"
#include "shape_math.cuh"

namespace bidora::cuda {

namespace {

constexpr int kRowThreads = 256;

// inner == 1: one block per output, its threads strided over the axis, combined by the fixed block tree.
__global__ void sum_rows_kernel(float* out, const float* a, int64_t axis) {
  __shared__ double scratch[kRowThreads / kWarpSize];
  const float* row = a + blockIdx.x * axis;
  const double total = block_sum(strided_sum(row, axis, static_cast<int>(threadIdx.x), blockDim.x), scratch);
  if (threadIdx.x == 0) out[blockIdx.x] = static_cast<float>(total);
}

// inner > 1: one thread per output (o, i), walking the axis in order; neighbouring threads read neighbouring i.
__global__ void sum_columns_kernel(float* out, const float* a, int64_t outer, int64_t axis, int64_t inner) {
  grid_stride(outer * inner, [&](int64_t index) {
    const int64_t o = index / inner, i = index % inner;
    const float* column = a + o * axis * inner + i;
    double total = 0.0;
    for (int64_t j = 0; j < axis; ++j) total += column[j * inner];
    out[index] = static_cast<float>(total);
  });
}

__global__ void broadcast_axis_kernel(float* out, const float* a, int64_t outer, int64_t axis, int64_t inner) {
  // outer only bounds the loop; the source index needs axis and inner alone.
  const int64_t n = outer * axis * inner;
  grid_stride(n, [&](int64_t index) { out[index] = a[broadcast_source(index, axis, inner)]; });
}

// Over the output [outer, length, inner]: out = a[:, start + j, :].
__global__ void narrow_kernel(float* out, const float* a, int64_t outer, int64_t axis, int64_t inner, int64_t start,
                              int64_t length) {
  const int64_t n = outer * length * inner;
  grid_stride(n, [&](int64_t index) { out[index] = a[narrow_source(index, axis, inner, start, length)]; });
}

// Over the output [outer, axis, inner]: grad inside the range, zero outside.
__global__ void narrow_backward_kernel(float* out, const float* grad, int64_t outer, int64_t axis, int64_t inner,
                                       int64_t start, int64_t length) {
  const int64_t n = outer * axis * inner;
  grid_stride(n, [&](int64_t index) {
    const int64_t source = narrow_backward_source(index, axis, inner, start, length);
    out[index] = source >= 0 ? grad[source] : 0.0f;
  });
}

// Over the output [a, c, b, d]: out[ai, ci, bi, di] = x[ai, bi, ci, di].
__global__ void permute_0213_kernel(float* out, const float* x, int64_t a, int64_t b, int64_t c, int64_t d) {
  const int64_t n = a * b * c * d;
  grid_stride(n, [&](int64_t index) { out[index] = x[permute_0213_source(index, b, c, d)]; });
}

}  // namespace

void sum_axis(float* out, const float* a, int64_t outer, int64_t axis, int64_t inner, cudaStream_t stream) {
  if (outer * inner == 0) return;
  if (inner == 1) {
    sum_rows_kernel<<<static_cast<unsigned>(outer), kRowThreads, 0, stream>>>(out, a, axis);
  } else {
    sum_columns_kernel<<<elementwise_blocks(outer * inner), kElementwiseThreads, 0, stream>>>(out, a, outer, axis,
                                                                                              inner);
  }
}

void broadcast_axis(float* out, const float* a, int64_t outer, int64_t axis, int64_t inner, cudaStream_t stream) {
  const int64_t n = outer * axis * inner;
  if (n == 0) return;
  broadcast_axis_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(out, a, outer, axis, inner);
}

void narrow(float* out, const float* a, int64_t outer, int64_t axis, int64_t inner, int64_t start, int64_t length,
            cudaStream_t stream) {
  const int64_t n = outer * length * inner;
  if (n == 0) return;
  narrow_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(out, a, outer, axis, inner, start, length);
}

void narrow_backward(float* out, const float* grad, int64_t outer, int64_t axis, int64_t inner, int64_t start,
                     int64_t length, cudaStream_t stream) {
  const int64_t n = outer * axis * inner;
  if (n == 0) return;
  narrow_backward_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(out, grad, outer, axis, inner,
                                                                                    start, length);
}

void permute_0213(float* out, const float* x, int64_t a, int64_t b, int64_t c, int64_t d, cudaStream_t stream) {
  const int64_t n = a * b * c * d;
  if (n == 0) return;
  permute_0213_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(out, x, a, b, c, d);
}

}  // namespace bidora::cuda
