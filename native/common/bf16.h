// bfloat16 as the storage of frozen weights (models.load(dir, { dtype: 'bfloat16' })): the upper 16 bits of a float32,
// so widening is exact and a 16-bit shift, and narrowing rounds the lower 16 bits away to nearest, ties to even.
// Shared by the CPU kernels, the CUDA kernels and the binding's conversions.
#pragma once

#include <cstdint>
#include <cstring>

#include "host_device.h"

namespace bidora {

// bfloat16 values are passed around as their bits (uint16_t), never as a C++ arithmetic type: neither g++ 12 nor
// every nvcc host compiler has one, and the bits are what files and kernels exchange.
using Bf16 = uint16_t;

BIDORA_HD float bf16_to_float(Bf16 bits) {
  const uint32_t word = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &word, sizeof value);
  return value;
}

// Round to nearest even, as PyTorch's and the hardware's conversions do; subnormals are kept, infinities stay
// infinite, values past the largest bfloat16 round to infinity, and a NaN stays a (quiet) NaN.
BIDORA_HD Bf16 float_to_bf16(float value) {
  uint32_t word;
  std::memcpy(&word, &value, sizeof word);
  if ((word & 0x7fffffffu) > 0x7f800000u) return static_cast<Bf16>((word >> 16) | 0x0040u);
  word += 0x7fffu + ((word >> 16) & 1u);
  return static_cast<Bf16>(word >> 16);
}

// A frozen weight as a kernel reads it: float32 or bfloat16 contents, exactly one set.
struct WeightView {
  const float* f32;
  const Bf16* bf16;
};

// Element `index` of the weight, widened to float32 (exact).
BIDORA_HD float weight_at(const WeightView& weight, int64_t index) {
  return weight.f32 != nullptr ? weight.f32[index] : bf16_to_float(weight.bf16[index]);
}

}  // namespace bidora
