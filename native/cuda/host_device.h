// What lets one header of math serve both the CUDA kernels and the host test: the __host__ __device__ marker (empty
// under a plain C++ compiler) and the small index helpers every kernel family shares.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define BIDORA_HD __host__ __device__ __forceinline__
#else
#define BIDORA_HD inline
#endif

namespace bidora::cuda {

BIDORA_HD int64_t ceil_div(int64_t value, int64_t divisor) { return (value + divisor - 1) / divisor; }

// A row is split between `lanes` threads that each take every lanes-th element starting at `lane`: consecutive
// threads read consecutive addresses (coalesced), and the partials are combined in a fixed order afterwards, so the
// result does not depend on scheduling. The host test runs the same helpers with every lane in turn.
BIDORA_HD float strided_sum(const float* values, int64_t count, int lane, int lanes) {
  float total = 0.0f;
  for (int64_t index = lane; index < count; index += lanes) total += values[index];
  return total;
}

BIDORA_HD float strided_dot(const float* a, const float* b, int64_t count, int lane, int lanes) {
  float total = 0.0f;
  for (int64_t index = lane; index < count; index += lanes) total += a[index] * b[index];
  return total;
}

}  // namespace bidora::cuda
