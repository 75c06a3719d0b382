// Elementwise dispatch and threading, plus the generic (reference) bodies.
#include "elementwise.h"

#include <algorithm>
#include <vector>

#include "../core/threadpool.h"

namespace bidora::cpu {

namespace generic {
#include "elementwise_body.inc"
const ElementwiseKernels& elementwise_kernels() { return kernels; }
}  // namespace generic

#if defined(__x86_64__) || defined(_M_X64)
namespace avx2 {
const ElementwiseKernels& elementwise_kernels();
}
namespace avx512 {
const ElementwiseKernels& elementwise_kernels();
}
#endif

const ElementwiseKernels& elementwise_kernels(Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
  if (isa == Isa::Avx512) return avx512::elementwise_kernels();
  if (isa == Isa::Avx2) return avx2::elementwise_kernels();
#endif
  (void)isa;
  return generic::elementwise_kernels();
}

namespace {

// Below this many elements a thread wake-up costs more than it saves.
constexpr int64_t kParallelElements = 1 << 16;
constexpr int64_t kGrain = 1024;  // multiple of every vector width, keeps ranges cache-line aligned

using BinaryKernel = void (*)(float*, const float*, const float*, int64_t, int64_t);

void run_binary(BinaryKernel kernel, float* out, const float* a, const float* b, int64_t n, int64_t period) {
  if (period == n) {
    parallel_for(n, kGrain, kParallelElements, [&](int64_t begin, int64_t end) {
      kernel(out + begin, a + begin, b + begin, end - begin, end - begin);
    });
    return;
  }
  // Broadcast: split by whole periods so every range starts at the beginning of b.
  const int64_t repeats = period == 0 ? 0 : n / period;
  const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(period, 1));
  parallel_for(repeats, grain, kParallelElements / std::max<int64_t>(period, 1), [&](int64_t begin, int64_t end) {
    kernel(out + begin * period, a + begin * period, b, (end - begin) * period, period);
  });
}

}  // namespace

void add(float* out, const float* a, const float* b, int64_t n, int64_t period) {
  run_binary(elementwise_kernels(active_isa()).add, out, a, b, n, period);
}
void sub(float* out, const float* a, const float* b, int64_t n, int64_t period) {
  run_binary(elementwise_kernels(active_isa()).sub, out, a, b, n, period);
}
void mul(float* out, const float* a, const float* b, int64_t n, int64_t period) {
  run_binary(elementwise_kernels(active_isa()).mul, out, a, b, n, period);
}

void scale(float* out, const float* a, float alpha, int64_t n) {
  const auto kernel = elementwise_kernels(active_isa()).scale;
  parallel_for(n, kGrain, kParallelElements,
               [&](int64_t begin, int64_t end) { kernel(out + begin, a + begin, alpha, end - begin); });
}

void axpy(float* y, float alpha, const float* x, int64_t n) {
  const auto kernel = elementwise_kernels(active_isa()).axpy;
  parallel_for(n, kGrain, kParallelElements,
               [&](int64_t begin, int64_t end) { kernel(y + begin, alpha, x + begin, end - begin); });
}

void sum_axis(float* out, const float* a, int64_t outer, int64_t axis, int64_t inner) {
  const auto kernel = elementwise_kernels(active_isa()).sum_axis;
  if (outer == 1 && inner > 1) {
    // One slab: split the columns instead, so both threads work on a [axis, inner] reduction.
    parallel_for(inner, 64, kParallelElements / std::max<int64_t>(axis, 1), [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; j += 256) {
        // Each column range is its own [1, axis, width] problem with row stride `inner`.
        const int64_t width = std::min<int64_t>(256, end - j);
        std::vector<double> totals(width, 0.0);
        for (int64_t row = 0; row < axis; ++row) {
          const float* values = a + row * inner + j;
          for (int64_t i = 0; i < width; ++i) totals[i] += values[i];
        }
        for (int64_t i = 0; i < width; ++i) out[j + i] = static_cast<float>(totals[i]);
      }
    });
    return;
  }
  const int64_t work_per_row = std::max<int64_t>(axis * inner, 1);
  parallel_for(outer, 1, std::max<int64_t>(1, kParallelElements / work_per_row),
               [&](int64_t begin, int64_t end) { kernel(out, a, begin, end, axis, inner); });
}

void broadcast_axis(float* out, const float* a, int64_t outer, int64_t axis, int64_t inner) {
  const int64_t slab = std::max<int64_t>(axis * inner, 1);
  parallel_for(outer, 1, std::max<int64_t>(1, kParallelElements / slab), [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      for (int64_t j = 0; j < axis; ++j) std::copy_n(a + o * inner, inner, out + (o * axis + j) * inner);
    }
  });
}

double sum_of_squares(const float* const* arrays, const int64_t* lengths, int64_t count) {
  // Fixed-size chunks summed in a fixed order: the same bits whatever the thread count.
  constexpr int64_t kChunk = 1 << 15;
  std::vector<std::pair<int64_t, int64_t>> chunks;  // (array, offset)
  for (int64_t array = 0; array < count; ++array) {
    for (int64_t offset = 0; offset < lengths[array]; offset += kChunk) chunks.emplace_back(array, offset);
  }
  std::vector<double> partial(chunks.size(), 0.0);
  const auto kernel = elementwise_kernels(active_isa()).sum_of_squares;
  parallel_for(static_cast<int64_t>(chunks.size()), 1, 4, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) {
      const auto [array, offset] = chunks[index];
      partial[index] = kernel(arrays[array] + offset, std::min(kChunk, lengths[array] - offset));
    }
  });
  double total = 0;
  for (double value : partial) total += value;
  return total;
}

}  // namespace bidora::cpu
