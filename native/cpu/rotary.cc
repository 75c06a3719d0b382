// Rotary position embeddings on the CPU: one (batch, token) at a time, its angles computed once and applied to every
// head's row, the per-pair rule shared with the CUDA kernel (../common/position_math.h).
#include <algorithm>
#include <vector>

#include "../common/position_math.h"
#include "../core/threadpool.h"
#include "nn.h"

namespace bidora::cpu {

void rotary(float* out, const float* x, const int32_t* positions, int64_t batch, int64_t heads, int64_t seq, int64_t d,
            float base, bool inverse) {
  const int64_t half = d / 2;
  std::vector<float> frequencies(half);
  for (int64_t pair = 0; pair < half; ++pair) frequencies[pair] = math::rotary_inverse_frequency(pair, d, base);
  constexpr int64_t kParallelElements = 1 << 14;
  const int64_t token_elements = std::max<int64_t>(heads * d, 1);
  parallel_for(batch * seq, 1, std::max<int64_t>(1, kParallelElements / token_elements),
               [&](int64_t begin, int64_t end) {
                 std::vector<float> angles(half);
                 for (int64_t token = begin; token < end; ++token) {
                   const int64_t b = token / seq, s = token % seq;
                   const float position = static_cast<float>(positions[token]);
                   for (int64_t pair = 0; pair < half; ++pair) angles[pair] = position * frequencies[pair];
                   for (int64_t head = 0; head < heads; ++head) {
                     const int64_t row = ((b * heads + head) * seq + s) * d;
                     for (int64_t pair = 0; pair < half; ++pair) {
                       math::rotate_pair(x[row + pair], x[row + pair + half], angles[pair], inverse, &out[row + pair],
                                         &out[row + pair + half]);
                     }
                   }
                 }
               });
}

}  // namespace bidora::cpu
