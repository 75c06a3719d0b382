// Counter-based normal and uniform fills.
#include "random.h"

#include <cmath>

#include "../core/threadpool.h"
#include "../cuda/random_math.cuh"
#include "elementwise.h"

namespace bidora::cpu {

namespace {

using cuda::random_mix;
using cuda::random_stream_key;
using cuda::random_unit_open;

constexpr int64_t kParallelElements = 1 << 15;

}  // namespace

void fill_normal(float* out, int64_t n, uint64_t seed, float mean, float stddev) {
  const uint64_t key = random_stream_key(seed);
  const int64_t pairs = (n + 1) / 2;
  parallel_for(pairs, 512, kParallelElements / 2, [&](int64_t begin, int64_t end) {
    constexpr double kTwoPi = 6.283185307179586;
    for (int64_t pair = begin; pair < end; ++pair) {
      const uint64_t counter = key + 2 * static_cast<uint64_t>(pair);
      const double radius = std::sqrt(-2.0 * std::log(random_unit_open(random_mix(counter))));
      const double angle = kTwoPi * random_unit_open(random_mix(counter + 1));
      out[2 * pair] = static_cast<float>(mean + stddev * radius * std::cos(angle));
      if (2 * pair + 1 < n) out[2 * pair + 1] = static_cast<float>(mean + stddev * radius * std::sin(angle));
    }
  });
}

void fill_uniform(float* out, int64_t n, uint64_t seed, float low, float high) {
  const uint64_t key = random_stream_key(seed);
  const double width = static_cast<double>(high) - low;
  parallel_for(n, 1024, kParallelElements, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) {
      const double value = low + width * random_unit_open(random_mix(key + static_cast<uint64_t>(index)));
      // Rounding to float can land on `high`; keep the interval half-open.
      const float rounded = static_cast<float>(value);
      out[index] = rounded < high ? rounded : std::nextafter(high, low);
    }
  });
}

void dropout(float* out, const float* in, int64_t n, float p, uint64_t seed) {
  const uint64_t key = cuda::dropout_key(seed), threshold = cuda::dropout_threshold(p);
  const float keep_scale = cuda::dropout_keep_scale(p);
  const auto kernel = elementwise_kernels(active_isa()).dropout;
  parallel_for(n, 1024, kParallelElements,
               [&](int64_t begin, int64_t end) { kernel(out, in, begin, end, key, threshold, keep_scale); });
}

}  // namespace bidora::cpu
