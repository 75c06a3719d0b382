// Row-major convenience over gemm(): contiguous matrices, each read as stored or transposed.
#pragma once

#include <cstdint>

#include "gemm.h"

namespace bidora::cpu {

// C[m,n] = alpha * op(A) op(B) + beta * C, with A stored row-major as [m,k] (or [k,m] when transpose_a), B as
// [k,n] (or [n,k] when transpose_b) and C as [m,n].
inline void matmul_rowmajor(float* c, const float* a, bool transpose_a, const float* b, bool transpose_b, int64_t m,
                            int64_t n, int64_t k, float alpha, float beta) {
  GemmOperands operands{};
  operands.c = c;
  operands.c_row_stride = n;
  operands.c_col_stride = 1;
  operands.a = a;
  operands.a_row_stride = transpose_a ? 1 : k;
  operands.a_col_stride = transpose_a ? m : 1;
  operands.b = b;
  operands.b_row_stride = transpose_b ? 1 : n;
  operands.b_col_stride = transpose_b ? k : 1;
  operands.m = m;
  operands.n = n;
  operands.k = k;
  operands.alpha = alpha;
  operands.beta = beta;
  gemm(operands);
}

}  // namespace bidora::cpu
