// Counter-based random fills: element i depends only on (seed, i), so results match whatever the thread count.
#pragma once

#include <cstdint>

namespace bidora::cpu {

// Normal(mean, stddev) by Box-Muller over pairs of uniforms drawn from a mixed (seed, counter).
void fill_normal(float* out, int64_t n, uint64_t seed, float mean, float stddev);
// Uniform on [low, high).
void fill_uniform(float* out, int64_t n, uint64_t seed, float low, float high);

}  // namespace bidora::cpu
