// Row-major convenience over gemm(): contiguous matrices, each read as stored or transposed.
#pragma once

#include <cstdint>

#include "../common/bf16.h"
#include "gemm.h"

namespace bidora::cpu {

// The operands of C[m,n] = alpha * op(A) op(B) + beta * C over contiguous row-major matrices, with A stored as
// [m,k] (or [k,m] when transpose_a), B as [k,n] (or [n,k] when transpose_b) and C as [m,n]; b is set by the caller.
inline GemmOperands rowmajor_operands(float* c, const float* a, bool transpose_a, bool transpose_b, int64_t m,
                                      int64_t n, int64_t k, float alpha, float beta) {
  GemmOperands operands{};
  operands.c = c;
  operands.c_row_stride = n;
  operands.c_col_stride = 1;
  operands.a = a;
  operands.a_row_stride = transpose_a ? 1 : k;
  operands.a_col_stride = transpose_a ? m : 1;
  operands.b_row_stride = transpose_b ? 1 : n;
  operands.b_col_stride = transpose_b ? k : 1;
  operands.m = m;
  operands.n = n;
  operands.k = k;
  operands.alpha = alpha;
  operands.beta = beta;
  return operands;
}

inline void matmul_rowmajor(float* c, const float* a, bool transpose_a, const float* b, bool transpose_b, int64_t m,
                            int64_t n, int64_t k, float alpha, float beta) {
  GemmOperands operands = rowmajor_operands(c, a, transpose_a, transpose_b, m, n, k, alpha, beta);
  operands.b = b;
  gemm(operands);
}

// The same with a frozen weight as B, float32 or bfloat16, and a bias row added to every row of C (or null).
inline void matmul_rowmajor(float* c, const float* a, bool transpose_a, WeightView b, bool transpose_b, int64_t m,
                            int64_t n, int64_t k, float alpha, float beta, const float* bias = nullptr) {
  GemmOperands operands = rowmajor_operands(c, a, transpose_a, transpose_b, m, n, k, alpha, beta);
  operands.b = b.f32;
  operands.b_bf16 = b.bf16;
  operands.bias = bias;
  gemm(operands);
}

}  // namespace bidora::cpu
