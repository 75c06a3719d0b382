// The [a, b, c, d] -> [a, c, b, d] permute that splits and merges attention heads, as contiguous row copies.
#include <algorithm>
#include <cstring>

#include "../core/threadpool.h"
#include "nn.h"

namespace bidora::cpu {

void permute_0213(float* out, const float* x, int64_t a, int64_t b, int64_t c, int64_t d) {
  constexpr int64_t kParallelElements = 1 << 16;
  // One task is one [b, d] block of the output (one head of one sequence); its d-long rows are copied whole.
  const int64_t block = std::max<int64_t>(b * d, 1);
  parallel_for(a * c, 1, std::max<int64_t>(1, kParallelElements / block), [&](int64_t begin, int64_t end) {
    for (int64_t outer = begin; outer < end; ++outer) {
      const int64_t ai = outer / c, ci = outer % c;
      float* destination = out + outer * b * d;
      const float* source = x + (ai * b * c + ci) * d;
      for (int64_t bi = 0; bi < b; ++bi) std::memcpy(destination + bi * d, source + bi * c * d, sizeof(float) * d);
    }
  });
}

}  // namespace bidora::cpu
