// What lets one header of math serve both the CUDA kernels and the host test: the __host__ __device__ marker (empty
// under a plain C++ compiler) and the small index helpers every kernel family shares.
#pragma once

#include <cstdint>

#include "../common/host_device.h"

namespace bidora::cuda {

// a · b rounded to float on its own: nvcc would otherwise fuse it into a following add (an FMA), so a value
// recomputed in two places could differ by that rounding. Host compilers here do not contract across statements.
BIDORA_HD float rounded_product(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

BIDORA_HD int64_t ceil_div(int64_t value, int64_t divisor) { return (value + divisor - 1) / divisor; }

// A row is split between `lanes` threads that each take every lanes-th element starting at `lane`: consecutive
// threads read consecutive addresses (coalesced), and the partials are combined in a fixed order afterwards, so the
// result does not depend on scheduling. The host test runs the same helpers with every lane in turn. Row sums are
// kept in double, as on the CPU: they feed differences (dy − Σ dy·y, log Σ − logit) that would expose float error.
BIDORA_HD double strided_sum(const float* values, int64_t count, int lane, int lanes) {
  double total = 0.0;
  for (int64_t index = lane; index < count; index += lanes) total += values[index];
  return total;
}

BIDORA_HD double strided_dot(const float* a, const float* b, int64_t count, int lane, int lanes) {
  double total = 0.0;
  for (int64_t index = lane; index < count; index += lanes) total += static_cast<double>(a[index]) * b[index];
  return total;
}

}  // namespace bidora::cuda
