// The optimizer and BiDoRA hypergradient kernels over lists of tensors: fused AdamW, the global norm of a list
// (two passes with a fixed partition, so the same bits every run), θ ± ε·v in place, and g − factor (g+ − g−).
// Element math in ../common/optim_math.h, the CPU's own.
#include <cmath>
#include <vector>

#include "cuda_ops.h"
#include "device_common.cuh"
#include "nn_math.cuh"

namespace bidora::cuda {

namespace {

constexpr int kListBlocksPerTensor = 64;  // grid.x of the elementwise list kernels (grid-stride within a tensor)
constexpr int kNormThreads = 256;

// ---- kernels --------------------------------------------------------------------------------------------------------

// Arrays: 0 param, 1 moment1, 2 moment2, 3 grad.
__global__ void adamw_kernel(ListChunk<4> list, AdamwScalars scalars) {
  const int tensor = blockIdx.y;
  float* param = list.data[0][tensor];
  float* moment1 = list.data[1][tensor];
  float* moment2 = list.data[2][tensor];
  const float* grad = list.data[3][tensor];
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < list.size[tensor];
       index += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float p = param[index], m = moment1[index], v = moment2[index];
    adamw_update(p, m, v, grad[index], scalars);
    param[index] = p;
    moment1[index] = m;
    moment2[index] = v;
  }
}

// Arrays: 0 param, 1 momentum buffer (null without momentum), 2 grad.
__global__ void sgd_kernel(ListChunk<3> list, SgdScalars scalars) {
  const int tensor = blockIdx.y;
  float* param = list.data[0][tensor];
  float* buffer = list.data[1][tensor];
  const float* grad = list.data[2][tensor];
  grid_stride(list.size[tensor], [&](int64_t index) {
    float p = param[index];
    sgd_update(p, buffer == nullptr ? nullptr : buffer + index, grad[index], scalars);
    param[index] = p;
  });
}

// First pass: block b of tensor t sums the squares of elements b·threads + thread, stepping by the whole grid row.
__global__ void sum_of_squares_partials_kernel(double* partials, ListChunk<1> list, int first_tensor) {
  __shared__ double scratch[kNormThreads / kWarpSize];
  const int tensor = blockIdx.y;
  const float* values = list.data[0][tensor];
  double total = 0.0;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < list.size[tensor];
       index += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    total += static_cast<double>(values[index]) * values[index];
  }
  total = block_sum(total, scratch);
  if (threadIdx.x == 0) partials[(first_tensor + tensor) * kNormPartialsPerTensor + blockIdx.x] = total;
}

// Second pass, one block: the partials in a fixed order, then the square root.
__global__ void global_norm_kernel(float* norm, const double* partials, int64_t count) {
  __shared__ double scratch[kNormThreads / kWarpSize];
  double total = 0.0;
  for (int64_t index = threadIdx.x; index < count; index += blockDim.x) total += partials[index];
  total = block_sum(total, scratch);
  if (threadIdx.x == 0) *norm = static_cast<float>(sqrt(total));
}

__global__ void perturbation_epsilon_kernel(float* epsilon, const float* norm, float radius) {
  *epsilon = perturbation_epsilon(radius, *norm);
}

// Arrays: 0 θ (in place), 1 v.
__global__ void list_axpy_kernel(ListChunk<2> list, float alpha, const float* device_factor) {
  const int tensor = blockIdx.y;
  const float factor = device_factor == nullptr ? alpha : alpha * *device_factor;
  float* theta = list.data[0][tensor];
  const float* direction = list.data[1][tensor];
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < list.size[tensor];
       index += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    theta[index] += factor * direction[index];
  }
}

// Arrays: 0 g (in place), 1 g+, 2 g−.
__global__ void hypergradient_kernel(ListChunk<3> list, float factor) {
  const int tensor = blockIdx.y;
  float* direct = list.data[0][tensor];
  const float *grad_plus = list.data[1][tensor], *grad_minus = list.data[2][tensor];
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < list.size[tensor];
       index += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    direct[index] = hypergradient_combine(direct[index], grad_plus[index], grad_minus[index], factor);
  }
}

// Calls launch(chunk, first_tensor) for every kListTensors tensors of the lists; arrays[a][i] is tensor i of list a.
template <int kArrays, typename Launch>
void for_each_chunk(const float* const* const (&arrays)[kArrays], const int64_t* sizes, int count, Launch launch) {
  for (int first = 0; first < count; first += kListTensors) {
    ListChunk<kArrays> chunk{};
    chunk.count = count - first < kListTensors ? count - first : kListTensors;
    for (int i = 0; i < chunk.count; ++i) {
      for (int a = 0; a < kArrays; ++a) chunk.data[a][i] = const_cast<float*>(arrays[a][first + i]);
      chunk.size[i] = sizes[first + i];
    }
    launch(chunk, first);
  }
}

dim3 list_grid(int count, int blocks_per_tensor) { return dim3(blocks_per_tensor, static_cast<unsigned>(count)); }

}  // namespace

// ---- launchers ------------------------------------------------------------------------------------------------------

void adamw_step(float* const* params, float* const* moment1, float* const* moment2, const float* const* grads,
                const int64_t* sizes, int count, const AdamwScalars& scalars, cudaStream_t stream) {
  const float* const* arrays[4] = {params, moment1, moment2, grads};
  for_each_chunk<4>(arrays, sizes, count, [&](const ListChunk<4>& chunk, int) {
    adamw_kernel<<<list_grid(chunk.count, kListBlocksPerTensor), kElementwiseThreads, 0, stream>>>(chunk, scalars);
  });
}

void sgd_step(float* const* params, float* const* momentum_buffers, const float* const* grads, const int64_t* sizes,
              int count, const SgdScalars& scalars, cudaStream_t stream) {
  // Without momentum every buffer slot is null: the kernel then skips the buffer.
  std::vector<float*> no_buffers(momentum_buffers == nullptr ? static_cast<size_t>(count) : 0, nullptr);
  const float* const* arrays[3] = {params, momentum_buffers != nullptr ? momentum_buffers : no_buffers.data(), grads};
  for_each_chunk<3>(arrays, sizes, count, [&](const ListChunk<3>& chunk, int) {
    sgd_kernel<<<list_grid(chunk.count, kListBlocksPerTensor), kElementwiseThreads, 0, stream>>>(chunk, scalars);
  });
}

void list_global_norm(float* norm, double* partials, const float* const* tensors, const int64_t* sizes, int count,
                      cudaStream_t stream) {
  const float* const* arrays[1] = {tensors};
  for_each_chunk<1>(arrays, sizes, count, [&](const ListChunk<1>& chunk, int first) {
    sum_of_squares_partials_kernel<<<list_grid(chunk.count, kNormPartialsPerTensor), kNormThreads, 0, stream>>>(
        partials, chunk, first);
  });
  global_norm_kernel<<<1, kNormThreads, 0, stream>>>(norm, partials,
                                                     static_cast<int64_t>(count) * kNormPartialsPerTensor);
}

void perturbation_epsilon(float* epsilon, const float* norm, float radius, cudaStream_t stream) {
  perturbation_epsilon_kernel<<<1, 1, 0, stream>>>(epsilon, norm, radius);
}

void list_axpy(float* const* thetas, const float* const* directions, const int64_t* sizes, int count, float alpha,
               const float* device_factor, cudaStream_t stream) {
  const float* const* arrays[2] = {thetas, directions};
  for_each_chunk<2>(arrays, sizes, count, [&](const ListChunk<2>& chunk, int) {
    list_axpy_kernel<<<list_grid(chunk.count, kListBlocksPerTensor), kElementwiseThreads, 0, stream>>>(chunk, alpha,
                                                                                                       device_factor);
  });
}

void combine_hypergradient(float* const* direct, const float* const* plus, const float* const* minus, float factor,
                           const int64_t* sizes, int count, cudaStream_t stream) {
  const float* const* arrays[3] = {direct, plus, minus};
  for_each_chunk<3>(arrays, sizes, count, [&](const ListChunk<3>& chunk, int) {
    hypergradient_kernel<<<list_grid(chunk.count, kListBlocksPerTensor), kElementwiseThreads, 0, stream>>>(chunk,
                                                                                                           factor);
  });
}

}  // namespace bidora::cuda
