// Optimizer dispatch and threading over tensor lists, plus the generic (reference) bodies.
#include "optim.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/threadpool.h"
#include "elementwise.h"

namespace bidora::cpu {

namespace generic {
#include "optim_body.inc"
const OptimKernels& optim_kernels() { return kernels; }
}  // namespace generic

#if defined(__x86_64__) || defined(_M_X64)
namespace avx2 {
const OptimKernels& optim_kernels();
}
namespace avx512 {
const OptimKernels& optim_kernels();
}
#endif

const OptimKernels& optim_kernels(Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
  if (isa == Isa::Avx512) return avx512::optim_kernels();
  if (isa == Isa::Avx2) return avx2::optim_kernels();
#endif
  (void)isa;
  return generic::optim_kernels();
}

namespace {

// Each tensor is cut into chunks of this many elements (a multiple of every vector width) before threads share
// them, so every element goes through the same vector or tail code whatever the thread count.
constexpr int64_t kChunk = 1 << 14;
// Below this many elements in the whole list a thread wake-up costs more than it saves.
constexpr int64_t kParallelElements = 1 << 16;

struct Chunk {
  int64_t tensor, begin, end;
};

// Calls body(tensor, begin, end) over every element of every tensor, in fixed chunks spread over the threads.
template <typename Body>
void for_each_chunk(const int64_t* lengths, int64_t count, const Body& body) {
  std::vector<Chunk> chunks;
  int64_t total = 0;
  for (int64_t tensor = 0; tensor < count; ++tensor) {
    total += lengths[tensor];
    for (int64_t begin = 0; begin < lengths[tensor]; begin += kChunk) {
      chunks.push_back({tensor, begin, std::min(lengths[tensor], begin + kChunk)});
    }
  }
  const int64_t chunk_count = static_cast<int64_t>(chunks.size());
  // parallel_for counts chunks, not elements: ask for threads only when the elements justify them.
  const int64_t min_parallel = total < kParallelElements ? chunk_count + 1 : 2;
  parallel_for(chunk_count, 1, min_parallel, [&](int64_t first, int64_t last) {
    for (int64_t index = first; index < last; ++index) {
      const Chunk& chunk = chunks[index];
      body(chunk.tensor, chunk.begin, chunk.end);
    }
  });
}

}  // namespace

void adamw_step(float* const* params, const float* const* grads, float* const* exp_avgs, float* const* exp_avg_sqs,
                const int64_t* lengths, int64_t count, const AdamwOptions& options) {
  const AdamwScalars scalars =
      math::adamw_scalars(options.lr, options.beta1, options.beta2, options.eps, options.weight_decay, options.step);
  const auto kernel = optim_kernels(active_isa()).adamw;
  for_each_chunk(lengths, count, [&](int64_t tensor, int64_t begin, int64_t end) {
    kernel(params[tensor] + begin, grads[tensor] + begin, exp_avgs[tensor] + begin, exp_avg_sqs[tensor] + begin,
           end - begin, scalars);
  });
}

void sgd_step(float* const* params, const float* const* grads, float* const* momentum_buffers, const int64_t* lengths,
              int64_t count, const SgdOptions& options) {
  const SgdScalars scalars{static_cast<float>(options.lr), static_cast<float>(options.momentum),
                           static_cast<float>(options.weight_decay), options.nesterov};
  const auto kernel = optim_kernels(active_isa()).sgd;
  for_each_chunk(lengths, count, [&](int64_t tensor, int64_t begin, int64_t end) {
    float* buffer = momentum_buffers == nullptr ? nullptr : momentum_buffers[tensor] + begin;
    kernel(params[tensor] + begin, grads[tensor] + begin, buffer, end - begin, scalars);
  });
}

void axpy_list(float* const* ys, float alpha, const float* const* xs, const int64_t* lengths, int64_t count) {
  const auto kernel = elementwise_kernels(active_isa()).axpy;
  for_each_chunk(lengths, count, [&](int64_t tensor, int64_t begin, int64_t end) {
    kernel(ys[tensor] + begin, alpha, xs[tensor] + begin, end - begin);
  });
}

void scale_list(float* const* tensors, float factor, const int64_t* lengths, int64_t count) {
  const auto kernel = optim_kernels(active_isa()).scale_in_place;
  for_each_chunk(lengths, count, [&](int64_t tensor, int64_t begin, int64_t end) {
    kernel(tensors[tensor] + begin, factor, end - begin);
  });
}

void combine_hypergradient(float* const* direct, const float* const* plus, const float* const* minus, float factor,
                           const int64_t* lengths, int64_t count) {
  const auto kernel = optim_kernels(active_isa()).combine_hypergradient;
  for_each_chunk(lengths, count, [&](int64_t tensor, int64_t begin, int64_t end) {
    kernel(direct[tensor] + begin, plus[tensor] + begin, minus[tensor] + begin, factor, end - begin);
  });
}

}  // namespace bidora::cpu
