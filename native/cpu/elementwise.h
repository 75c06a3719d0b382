// Elementwise arithmetic and reductions on contiguous float arrays, multi-threaded, with one body per ISA path.
//
// Legend: n elements. Binary ops read `b` repeated every `period` elements of `a` (period == n: same shape;
// period < n: a trailing-dims broadcast such as a bias). sum_axis reads `a` as [outer, axis, inner].
#pragma once

#include <cstdint>

#include "../core/cpu_features.h"
#include "../cuda/random_math.cuh"

namespace bidora::cpu {

struct ElementwiseKernels {
  void (*add)(float* out, const float* a, const float* b, int64_t n, int64_t period);
  void (*sub)(float* out, const float* a, const float* b, int64_t n, int64_t period);
  void (*mul)(float* out, const float* a, const float* b, int64_t n, int64_t period);
  void (*scale)(float* out, const float* a, float alpha, int64_t n);
  void (*axpy)(float* y, float alpha, const float* x, int64_t n);  // y += alpha * x
  // out[o, i] = sum over j of a[o, j, i], accumulated in double; o, i within the given row range of out.
  void (*sum_axis)(float* out, const float* a, int64_t outer_begin, int64_t outer_end, int64_t axis, int64_t inner);
  double (*sum_of_squares)(const float* a, int64_t n);
  // out[i] = keep_i ? in[i] · keep_scale : 0 for i in [begin, end), keep_i from ../cuda/random_math.cuh.
  void (*dropout)(float* out, const float* in, int64_t begin, int64_t end, uint64_t key, uint64_t threshold,
                  float keep_scale);
};

const ElementwiseKernels& elementwise_kernels(Isa isa);

void add(float* out, const float* a, const float* b, int64_t n, int64_t period);
void sub(float* out, const float* a, const float* b, int64_t n, int64_t period);
void mul(float* out, const float* a, const float* b, int64_t n, int64_t period);
void scale(float* out, const float* a, float alpha, int64_t n);
void axpy(float* y, float alpha, const float* x, int64_t n);
void sum_axis(float* out, const float* a, int64_t outer, int64_t axis, int64_t inner);
// The reverse of sum_axis: out[o, j, i] = a[o, i] for every j (the gradient of a sum over an axis).
void broadcast_axis(float* out, const float* a, int64_t outer, int64_t axis, int64_t inner);
// Sum of squares over several arrays, in double, independent of the thread count (fixed chunking).
double sum_of_squares(const float* const* arrays, const int64_t* lengths, int64_t count);

}  // namespace bidora::cpu
