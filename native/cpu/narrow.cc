// Range copies along an axis, split by outer rows.
#include "narrow.h"

#include <algorithm>

#include "../core/threadpool.h"

namespace bidora::cpu {

namespace {
constexpr int64_t kParallelElements = 1 << 15;
}

void narrow(float* out, const float* a, int64_t outer, int64_t axis, int64_t inner, int64_t start, int64_t length) {
  const int64_t piece = length * inner;
  parallel_for(outer, 1, std::max<int64_t>(1, kParallelElements / std::max<int64_t>(piece, 1)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t o = begin; o < end; ++o) {
                   std::copy_n(a + (o * axis + start) * inner, piece, out + o * piece);
                 }
               });
}

void narrow_backward(float* out, const float* grad, int64_t outer, int64_t axis, int64_t inner, int64_t start,
                     int64_t length) {
  const int64_t piece = length * inner;
  parallel_for(outer, 1, std::max<int64_t>(1, kParallelElements / std::max<int64_t>(axis * inner, 1)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t o = begin; o < end; ++o) {
                   float* slab = out + o * axis * inner;
                   std::fill_n(slab, axis * inner, 0.0f);
                   std::copy_n(grad + o * piece, piece, slab + start * inner);
                 }
               });
}

}  // namespace bidora::cpu
