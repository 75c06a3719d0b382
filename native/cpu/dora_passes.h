// The memory-bound passes of the fused DoRA layer (column reductions of the output gradient, the compose step), with
// one body per ISA path like elementwise.h; the products themselves go through gemm().
#pragma once

#include <cstdint>

#include "../core/cpu_features.h"

namespace bidora::cpu {

struct DoraPasses {
  // Columns [begin, end) of [rows, cols]: column_sums = Σ_i gy (if not null), column_dots = Σ_i gy·u in double,
  // then combined (u) <- gy ⊙ gain.
  void (*reduce_and_scale_columns)(float* column_sums, double* column_dots, float* combined, const float* grad_output,
                                   const float* gain, int64_t rows, int64_t cols, int64_t begin, int64_t end);
  // Columns [begin, end): out = Σ_i values, in double.
  void (*column_sums)(float* out, const float* values, int64_t rows, int64_t cols, int64_t begin, int64_t end);
  // Rows [begin, end): output = gain ⊙ combined + bias (bias may be null).
  void (*compose_rows)(float* output, const float* combined, const float* gain, const float* bias, int64_t cols,
                       int64_t begin, int64_t end);
};

const DoraPasses& dora_passes(Isa isa);

}  // namespace bidora::cpu
