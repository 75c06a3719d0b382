// Counter-based random fills: element i depends only on (seed, i), so results match whatever the thread count.
#pragma once

#include <cstdint>

namespace bidora::cpu {

// Normal(mean, stddev) by Box-Muller over pairs of uniforms drawn from a mixed (seed, counter).
void fill_normal(float* out, int64_t n, uint64_t seed, float mean, float stddev);
// Uniform on [low, high).
void fill_uniform(float* out, int64_t n, uint64_t seed, float low, float high);

// Inverted dropout: out = in ⊙ keep / (1 − p), keep_i = (uniform(seed, i) >= p). In place allowed. The mask depends
// only on (seed, i), so backward regenerates it instead of storing it.
void dropout(float* out, const float* in, int64_t n, float p, uint64_t seed);

}  // namespace bidora::cpu
