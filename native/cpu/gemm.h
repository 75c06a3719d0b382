// Single-precision matrix product for every layer above: packed, cache-blocked, register-tiled, multi-threaded.
//
// Legend: M rows of C, N columns of C, K the shared dimension.
// Every matrix is addressed by a row stride and a column stride, so transposes are free:
//   A(i, k) = a[i * a_row_stride + k * a_col_stride]   (M x K)
//   B(k, j) = b[k * b_row_stride + j * b_col_stride]   (K x N)
//   C(i, j) = c[i * c_row_stride + j * c_col_stride]   (M x N)
// Computes C = alpha * A B + beta * C. With beta == 0, C is only written (whatever it held, NaN included, is
// ignored). Each C element is accumulated in the same order whatever the thread count, so results do not depend on
// the number of threads.
//
// B may instead be bfloat16 (b_bf16 set, b null): a frozen weight kept in half the memory. On a CPU with AVX512-BF16
// (and the avx512 path active) A is rounded to bfloat16 (nearest even) while it is packed and vdpbf16ps multiplies
// pairs of k, accumulating in float32: each product is exact, so the error is A's rounding (relative 2^-8 per
// element: bfloat16 keeps 8 significant bits) plus float32 accumulation. Elsewhere B is widened to float32 while it is
// packed (exact) and the float32 kernel runs: float32-accurate. Either way C keeps its layout; B is never transposed
// into the A role.
#pragma once

#include <cstdint>

#include "../core/cpu_features.h"

namespace bidora::cpu {

struct GemmOperands {
  float* c;
  int64_t c_row_stride, c_col_stride;
  const float* a;
  int64_t a_row_stride, a_col_stride;
  const float* b;
  int64_t b_row_stride, b_col_stride;
  int64_t m, n, k;
  float alpha, beta;
  const uint16_t* b_bf16 = nullptr;  // B as bfloat16 bits, with b null and the same strides (in elements)
  // A row added to every row of C: C = alpha A B + beta C + 1 biasᵀ (a linear layer's bias, n values), or null. Added
  // as each register tile is first stored, so C is not written and read back by a separate pass.
  const float* bias = nullptr;
};

// Whether products with a bfloat16 B use vdpbf16ps on path `isa` (AVX512-BF16 CPU, avx512 path) rather than widening.
bool bf16_dot_product(Isa isa);

// Uses active_isa() and the thread pool.
void gemm(const GemmOperands& operands);
// Same with an explicit path (the tests run every path this CPU has).
void gemm(const GemmOperands& operands, Isa isa);
// Several products that share B: C_i = alpha_i A_i B + beta_i C_i for i < count, where every block has the same b,
// b strides, n and k, and its own A, C, m, alpha and beta. B is packed and streamed once for all blocks (a pass over a
// large B costs as much as the arithmetic of a few hundred rows). Each block gets the value a plain gemm() call on it
// would give, to rounding, and the same bits whenever that call takes the packed form without transposing (C with
// contiguous columns and at least a register tile of them). Results do not depend on the thread count. Blocks' C must
// not overlap each other or any A or B. A C with strided columns (e.g. written transposed) goes through a small
// staging tile: fine for a few rows, slow for a big block.
void gemm_stacked(const GemmOperands* blocks, int count);
void gemm_stacked(const GemmOperands* blocks, int count, Isa isa);
// Plain triple loop accumulating in double: the reference every fast path is tested against.
void gemm_reference(const GemmOperands& operands);

}  // namespace bidora::cpu
