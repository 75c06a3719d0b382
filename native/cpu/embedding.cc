// Embedding lookup and its deterministic scatter-add backward.
#include <algorithm>
#include <cstring>
#include <vector>

#include "../core/threadpool.h"
#include "nn.h"

namespace bidora::cpu {

namespace {

constexpr int64_t kParallelElements = 1 << 15;

int64_t min_parallel_rows(int64_t d) { return std::max<int64_t>(1, kParallelElements / std::max<int64_t>(d, 1)); }

}  // namespace

void embedding_forward(float* out, const float* weight, const int32_t* ids, int64_t n, int64_t d) {
  parallel_for(n, 1, min_parallel_rows(d), [&](int64_t begin, int64_t end) {
    for (int64_t position = begin; position < end; ++position) {
      std::memcpy(out + position * d, weight + static_cast<int64_t>(ids[position]) * d, sizeof(float) * d);
    }
  });
}

void embedding_backward(float* grad_weight, const float* grad_out, const int32_t* ids, int64_t n, int64_t v,
                        int64_t d) {
  // Counting sort of positions by id, stable, so each vocabulary row adds its positions in ascending order: the sum
  // order, and so the bits, depend on the ids alone, never on which thread does what.
  std::vector<int64_t> first(v + 1, 0);
  for (int64_t position = 0; position < n; ++position) ++first[ids[position] + 1];
  for (int64_t id = 0; id < v; ++id) first[id + 1] += first[id];
  std::vector<int64_t> positions(n);
  std::vector<int64_t> cursor(first.begin(), first.end() - 1);
  for (int64_t position = 0; position < n; ++position) positions[cursor[ids[position]]++] = position;

  // Every thread owns a range of vocabulary rows: it zeroes them (most rows get no gradient) and adds into them.
  parallel_for(v, 1, min_parallel_rows(d), [&](int64_t begin, int64_t end) {
    std::memset(grad_weight + begin * d, 0, sizeof(float) * (end - begin) * d);
    for (int64_t id = begin; id < end; ++id) {
      float* __restrict row = grad_weight + id * d;
      for (int64_t slot = first[id]; slot < first[id + 1]; ++slot) {
        const float* __restrict source = grad_out + positions[slot] * d;
        for (int64_t j = 0; j < d; ++j) row[j] += source[j];
      }
    }
  });
}

}  // namespace bidora::cpu
