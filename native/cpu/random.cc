// Counter-based normal and uniform fills.
#include "random.h"

#include <cmath>

#include "../core/threadpool.h"

namespace bidora::cpu {

namespace {

// SplitMix64's finaliser: a bijective mix with full avalanche, enough to turn (seed, counter) into 64 random bits.
uint64_t mix(uint64_t value) {
  value += 0x9e3779b97f4a7c15ull;
  value = (value ^ (value >> 30)) * 0xbf58476d1ce4e5b9ull;
  value = (value ^ (value >> 27)) * 0x94d049bb133111ebull;
  return value ^ (value >> 31);
}

// A double in (0, 1): 53 random bits, offset by half a step so that log() never sees 0.
double unit_open(uint64_t bits) { return (static_cast<double>(bits >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

uint64_t stream_key(uint64_t seed) { return mix(seed ^ 0x6a09e667f3bcc909ull); }

constexpr int64_t kParallelElements = 1 << 15;

}  // namespace

void fill_normal(float* out, int64_t n, uint64_t seed, float mean, float stddev) {
  const uint64_t key = stream_key(seed);
  const int64_t pairs = (n + 1) / 2;
  parallel_for(pairs, 512, kParallelElements / 2, [&](int64_t begin, int64_t end) {
    constexpr double kTwoPi = 6.283185307179586;
    for (int64_t pair = begin; pair < end; ++pair) {
      const uint64_t counter = key + 2 * static_cast<uint64_t>(pair);
      const double radius = std::sqrt(-2.0 * std::log(unit_open(mix(counter))));
      const double angle = kTwoPi * unit_open(mix(counter + 1));
      out[2 * pair] = static_cast<float>(mean + stddev * radius * std::cos(angle));
      if (2 * pair + 1 < n) out[2 * pair + 1] = static_cast<float>(mean + stddev * radius * std::sin(angle));
    }
  });
}

void fill_uniform(float* out, int64_t n, uint64_t seed, float low, float high) {
  const uint64_t key = stream_key(seed);
  const double width = static_cast<double>(high) - low;
  parallel_for(n, 1024, kParallelElements, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) {
      const double value = low + width * unit_open(mix(key + static_cast<uint64_t>(index)));
      // Rounding to float can land on `high`; keep the interval half-open.
      const float rounded = static_cast<float>(value);
      out[index] = rounded < high ? rounded : std::nextafter(high, low);
    }
  });
}

void dropout(float* out, const float* in, int64_t n, float p, uint64_t seed) {
  const uint64_t key = stream_key(seed ^ 0xd5a61266f0c9392cull);
  const float keep_scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
  parallel_for(n, 1024, kParallelElements, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) {
      const bool keep = unit_open(mix(key + static_cast<uint64_t>(index))) >= p;
      out[index] = keep ? in[index] * keep_scale : 0.0f;
    }
  });
}

}  // namespace bidora::cpu
