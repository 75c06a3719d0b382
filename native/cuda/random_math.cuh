// The counter-based random numbers behind randn, uniform and dropout, for the CPU and the GPU alike: an element's
// value depends on (seed, index) alone, so a dropout mask is the same on either device and any thread count.
#pragma once

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace bidora::cuda {

// SplitMix64's finaliser: a bijective mix with full avalanche, enough to turn (seed, counter) into 64 random bits.
BIDORA_HD uint64_t random_mix(uint64_t value) {
  value += 0x9e3779b97f4a7c15ull;
  value = (value ^ (value >> 30)) * 0xbf58476d1ce4e5b9ull;
  value = (value ^ (value >> 27)) * 0x94d049bb133111ebull;
  return value ^ (value >> 31);
}

// A double in (0, 1): 53 random bits, offset by half a step so that log() never sees 0.
BIDORA_HD double random_unit_open(uint64_t bits) {
  return (static_cast<double>(bits >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

// The first counter of a seed's stream.
BIDORA_HD uint64_t random_stream_key(uint64_t seed) { return random_mix(seed ^ 0x6a09e667f3bcc909ull); }

// Dropout's own stream, apart from randn's and uniform's for the same seed.
BIDORA_HD uint64_t dropout_key(uint64_t seed) { return random_stream_key(seed ^ 0xd5a61266f0c9392cull); }

// Dropout keeps an element when the top 53 bits of its random word reach this: ceil(p · 2^53), so it keeps with
// probability 1 − p (to 2^-53) and the test is one integer compare, which vectorises.
BIDORA_HD uint64_t dropout_threshold(float p) {
  return static_cast<uint64_t>(ceil(static_cast<double>(p) * 9007199254740992.0));
}

// Whether dropout keeps element `index`, for a threshold from dropout_threshold.
BIDORA_HD bool dropout_keeps(uint64_t key, int64_t index, uint64_t threshold) {
  return (random_mix(key + static_cast<uint64_t>(index)) >> 11) >= threshold;
}

// What a kept element is multiplied by: 1 / (1 − p) (0 for p = 1, which drops everything).
BIDORA_HD float dropout_keep_scale(float p) { return p < 1.0f ? 1.0f / (1.0f - p) : 0.0f; }

}  // namespace bidora::cuda
