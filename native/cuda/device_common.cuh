// Device-side helpers every kernel file shares: fixed-order warp and block reductions, launch sizes, and the
// multi-tensor chunk that carries a list of tensors into one launch as a kernel parameter.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "host_device.h"

namespace bidora::cuda {

constexpr int kWarpSize = 32;
constexpr int kElementwiseThreads = 256;

// Butterfly sums: the same shuffle tree on every call, so the bits depend on the inputs alone. Every lane ends
// with the total.
template <typename T>
__device__ __forceinline__ T warp_sum(T value) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

__device__ __forceinline__ float warp_max(float value) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  }
  return value;
}

// Σ over the block's threads in a fixed order (warp trees, then the warp totals in warp order); every thread gets
// the total. scratch: one T per warp in shared memory. Needs blockDim.x a multiple of 32.
template <typename T>
__device__ T block_sum(T value, T* scratch) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize, warps = blockDim.x / kWarpSize;
  value = warp_sum(value);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  T total = 0;
  for (int index = 0; index < warps; ++index) total += scratch[index];
  return total;
}

// Calls body(index) for every index below n, spread over the whole grid: a grid-stride loop, so any grid size covers
// any n.
template <typename Body>
__device__ __forceinline__ void grid_stride(int64_t n, Body body) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < n;
       index += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    body(index);
  }
}

// Blocks for a grid-stride loop over n elements: enough to fill a large GPU, no more than the work needs.
inline unsigned elementwise_blocks(int64_t n) {
  return static_cast<unsigned>(std::clamp<int64_t>(ceil_div(n, kElementwiseThreads), 1, 4096));
}

// Up to kListTensors tensors of a list, by value in the kernel's parameters (well under the 4 KiB limit): the
// launch's grid.y picks the tensor. Launchers walk longer lists in chunks.
constexpr int kListTensors = 32;
template <int kArrays>
struct ListChunk {
  float* data[kArrays][kListTensors];
  int64_t size[kListTensors];
  int count;
};

}  // namespace bidora::cuda
