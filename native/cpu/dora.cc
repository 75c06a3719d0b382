// The fused DoRA and LoRA kernels and their double-precision references.
#include "dora.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/memory.h"
#include "../core/threadpool.h"
// The per-row norm math is shared with the CUDA kernels: one definition for both backends.
#include "../cuda/dora_math.cuh"
#include "dora_passes.h"
#include "matrix.h"

namespace bidora::cpu {

namespace {

constexpr int64_t kColumnGrain = 64;  // columns per thread share: whole cache lines, stable partitions
constexpr int64_t kParallelElements = 1 << 15;

// The elementwise passes around the products, vectorised per ISA path (dora_passes_body.inc).
void reduce_and_scale_columns(float* column_sums, double* column_dots, float* combined, const float* grad_output,
                              const float* gain, int64_t rows, int64_t cols, int64_t begin, int64_t end) {
  dora_passes(active_isa())
      .reduce_and_scale_columns(column_sums, column_dots, combined, grad_output, gain, rows, cols, begin, end);
}

// Column sums of a [rows, cols] matrix in double, split by columns so the result does not depend on threads.
void column_sums(float* out, const float* values, int64_t rows, int64_t cols) {
  const auto kernel = dora_passes(active_isa()).column_sums;
  parallel_for(cols, kColumnGrain, kParallelElements / std::max<int64_t>(rows, 1),
               [&](int64_t begin, int64_t end) { kernel(out, values, rows, cols, begin, end); });
}

// out[i, :] = gain ⊙ combined[i, :] + bias, by rows.
void compose_rows(float* output, const float* combined, const float* gain, const float* bias, int64_t rows,
                  int64_t cols) {
  const auto kernel = dora_passes(active_isa()).compose_rows;
  parallel_for(rows, 1, std::max<int64_t>(1, kParallelElements / std::max<int64_t>(cols, 1)),
               [&](int64_t begin, int64_t end) { kernel(output, combined, gain, bias, cols, begin, end); });
}

// grad_input = g W0 + s (gh A) [masked by dropout's backward when the branch saw a dropped input]. base_written:
// grad_input already holds g W0 (computed in a shared pass over W0).
void input_gradient(float* grad_input, const float* grad_combined, const float* grad_hidden, WeightView weight,
                    const float* lora_a, float lora_factor, DropoutBackward dropout, const void* dropout_context,
                    const AdapterDims& dims, bool base_written = false) {
  const auto [n, k, m, r] = dims;
  if (!base_written) matmul_rowmajor(grad_input, grad_combined, false, weight, false, n, k, m, 1.0f, 0.0f);
  if (dropout == nullptr) {
    matmul_rowmajor(grad_input, grad_hidden, false, lora_a, false, n, k, r, lora_factor, 1.0f);
    return;
  }
  FloatBuffer branch(n * k);
  matmul_rowmajor(branch.data(), grad_hidden, false, lora_a, false, n, k, r, lora_factor, 0.0f);
  dropout(branch.data(), n * k, dropout_context);
  parallel_for(n * k, 1024, kParallelElements, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) grad_input[index] += branch.data()[index];
  });
}

// n_j from its factored terms (see dora_norm), given W0 Aᵀ and A Aᵀ.
void norm_from_factors(float* norm, const float* weight_lora_a, const float* lora_gram, const float* weight_sq_norms,
                       const float* lora_b, float scale, float eps, int64_t m, int64_t r) {
  parallel_for(m, 16, 4096 / std::max<int64_t>(r * r, 1), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      norm[row] = cuda::dora_row_norm(weight_lora_a + row * r, lora_gram, lora_b + row * r, weight_sq_norms[row], scale,
                                      eps, r);
    }
  });
}

// output = (m / n) ⊙ u + bias, from u = x W0ᵀ already in combined: adds s h Bᵀ to u first.
void finish_forward(float* output, float* combined, const float* hidden, const float* bias, const float* lora_b,
                    const float* magnitude, const float* norm, float scale, const AdapterDims& dims) {
  const auto [n, k, m, r] = dims;
  matmul_rowmajor(combined, hidden, false, lora_b, true, n, m, r, scale, 1.0f);  // u += s h Bᵀ
  std::vector<float> gain(m);
  for (int64_t j = 0; j < m; ++j) gain[j] = magnitude[j] / norm[j];
  compose_rows(output, combined, gain.data(), bias, n, m);
}

}  // namespace

void row_sq_norms(float* out, WeightView weight, int64_t m, int64_t k) {
  parallel_for(m, 1, std::max<int64_t>(1, kParallelElements / std::max<int64_t>(k, 1)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t row = begin; row < end; ++row) {
                   double total = 0;
                   for (int64_t col = 0; col < k; ++col) {
                     const double value = weight_at(weight, row * k + col);
                     total += value * value;
                   }
                   out[row] = static_cast<float>(total);
                 }
               });
}

void dora_norm(float* norm, float* weight_lora_a, float* lora_gram, WeightView weight, const float* weight_sq_norms,
               const float* lora_a, const float* lora_b, float scale, float eps, int64_t m, int64_t k, int64_t r) {
  if (weight.f32 != nullptr) {
    matmul_rowmajor(weight_lora_a, weight.f32, false, lora_a, true, m, r, k, 1.0f, 0.0f);  // W0 Aᵀ [M,R]
  } else {
    // A bfloat16 W0 can only be B: (A W0ᵀ)ᵀ, written transposed.
    gemm({weight_lora_a, 1, r, lora_a, k, 1, nullptr, 1, k, r, m, k, 1.0f, 0.0f, weight.bf16});
  }
  matmul_rowmajor(lora_gram, lora_a, false, lora_a, true, r, r, k, 1.0f, 0.0f);  // A Aᵀ [R,R]
  norm_from_factors(norm, weight_lora_a, lora_gram, weight_sq_norms, lora_b, scale, eps, m, r);
}

void dora_forward(float* output, float* combined, float* hidden, float* norm, float* weight_lora_a, float* lora_gram,
                  const float* input, const float* lora_input, WeightView weight, const float* weight_sq_norms,
                  const float* bias, const float* lora_a, const float* lora_b, const float* magnitude, float scale,
                  float eps, const AdapterDims& dims) {
  const auto [n, k, m, r] = dims;
  matmul_rowmajor(hidden, lora_input, false, lora_a, true, n, r, k, 1.0f, 0.0f);  // h = x_d Aᵀ
  matmul_rowmajor(lora_gram, lora_a, false, lora_a, true, r, r, k, 1.0f, 0.0f);   // A Aᵀ [R,R]
  // u = x W0ᵀ and A W0ᵀ (stored transposed: W0 Aᵀ [M,R]) as rows of one product, so W0 streams from memory once.
  GemmOperands blocks[2] = {
      {combined, m, 1, input, k, 1, weight.f32, 1, k, n, m, k, 1.0f, 0.0f, weight.bf16},
      {weight_lora_a, 1, r, lora_a, k, 1, weight.f32, 1, k, r, m, k, 1.0f, 0.0f, weight.bf16},
  };
  gemm_stacked(blocks, 2);
  norm_from_factors(norm, weight_lora_a, lora_gram, weight_sq_norms, lora_b, scale, eps, m, r);
  finish_forward(output, combined, hidden, bias, lora_b, magnitude, norm, scale, dims);
}

void dora_backward(const AdapterGrads& grads, float* combined, const float* grad_output, const float* lora_input,
                   WeightView weight, const float* lora_a, const float* lora_b, const float* magnitude,
                   const float* norm, const float* hidden, const float* weight_lora_a, const float* lora_gram,
                   float scale, float eps, bool detach_norm, DropoutBackward dropout, const void* dropout_context,
                   const AdapterDims& dims) {
  const auto [n, k, m, r] = dims;
  std::vector<float> gain(m);
  for (int64_t j = 0; j < m; ++j) gain[j] = magnitude[j] / norm[j];

  // One pass over grad_output: Σ_i gy_ij (bias), Σ_i gy_ij u_ij (magnitude and norm), and u <- gy ⊙ (m / n).
  std::vector<double> dots(m);
  parallel_for(m, kColumnGrain, kParallelElements / std::max<int64_t>(n, 1), [&](int64_t begin, int64_t end) {
    reduce_and_scale_columns(grads.bias, dots.data(), combined, grad_output, gain.data(), n, m, begin, end);
  });
  const float* grad_combined = combined;
  if (grads.magnitude != nullptr) {
    for (int64_t j = 0; j < m; ++j) grads.magnitude[j] = static_cast<float>(dots[j] / norm[j]);
  }

  // Through the norm: dL/dV_j = norm_coefficient_j V_j, with dL/dn_j = −m_j Σ_i gy_ij u_ij / n_j² and dn_j/dV_j =
  // V_j / n_j. A norm floored at eps is a constant.
  const bool through_norm = !detach_norm && (grads.lora_a != nullptr || grads.lora_b != nullptr);
  std::vector<float> norm_coefficient;
  if (through_norm) {
    norm_coefficient.resize(m);
    for (int64_t j = 0; j < m; ++j)
      norm_coefficient[j] = cuda::dora_norm_coefficient(magnitude[j], dots[j], norm[j], eps);
  }

  const bool need_hidden_grad = grads.lora_a != nullptr || grads.input != nullptr;
  FloatBuffer grad_hidden;
  if (need_hidden_grad) {
    grad_hidden = FloatBuffer(n * r);
    matmul_rowmajor(grad_hidden.data(), grad_combined, false, lora_b, false, n, r, m, 1.0f, 0.0f);  // ĝ B
  }

  if (grads.lora_b != nullptr) {
    matmul_rowmajor(grads.lora_b, grad_combined, true, hidden, false, m, r, n, scale, 0.0f);  // s ĝᵀ h
    if (through_norm) {
      // + s c_j (V Aᵀ)_j with V Aᵀ = W0 Aᵀ + s B (A Aᵀ), all [M,R].
      parallel_for(m, 16, 4096 / std::max<int64_t>(r * r, 1), [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
          for (int64_t p = 0; p < r; ++p) {
            grads.lora_b[row * r + p] += cuda::dora_lora_b_norm_term(
                weight_lora_a + row * r, lora_gram, lora_b + row * r, norm_coefficient[row], scale, p, r);
          }
        }
      });
    }
  }

  bool input_base_written = false;
  if (grads.lora_a != nullptr) {
    matmul_rowmajor(grads.lora_a, grad_hidden.data(), true, lora_input, false, r, k, n, scale, 0.0f);  // s ghᵀ x_d
    if (through_norm) {
      // + s Bᵀ diag(c) V = s (cB)ᵀ W0 + s² ((cB)ᵀ B) A.
      FloatBuffer scaled_b(m * r);
      for (int64_t row = 0; row < m; ++row) {
        for (int64_t p = 0; p < r; ++p) scaled_b.data()[row * r + p] = norm_coefficient[row] * lora_b[row * r + p];
      }
      // (cB)ᵀ W0 [R,K] is a few more rows of ĝ W0 [N,K]: one pass over W0 serves both.
      GemmOperands blocks[2] = {
          {grads.input, k, 1, grad_combined, m, 1, weight.f32, k, 1, n, k, m, 1.0f, 0.0f, weight.bf16},
          {grads.lora_a, k, 1, scaled_b.data(), 1, r, weight.f32, k, 1, r, k, m, scale, 1.0f, weight.bf16},
      };
      if (grads.input != nullptr) {
        gemm_stacked(blocks, 2);
        input_base_written = true;
      } else {
        gemm(blocks[1]);
      }
      FloatBuffer small(r * r);
      matmul_rowmajor(small.data(), scaled_b.data(), true, lora_b, false, r, r, m, 1.0f, 0.0f);
      matmul_rowmajor(grads.lora_a, small.data(), false, lora_a, false, r, k, r, scale * scale, 1.0f);
    }
  }

  if (grads.input != nullptr) {
    input_gradient(grads.input, grad_combined, grad_hidden.data(), weight, lora_a, scale, dropout, dropout_context,
                   dims, input_base_written);
  }
}

void lora_forward(float* output, float* hidden, const float* input, const float* lora_input, WeightView weight,
                  const float* bias, const float* lora_a, const float* lora_b, float scale, const AdapterDims& dims) {
  const auto [n, k, m, r] = dims;
  matmul_rowmajor(hidden, lora_input, false, lora_a, true, n, r, k, 1.0f, 0.0f);
  matmul_rowmajor(output, input, false, weight, true, n, m, k, 1.0f, 0.0f, bias);
  matmul_rowmajor(output, hidden, false, lora_b, true, n, m, r, scale, 1.0f);
}

void lora_backward(const AdapterGrads& grads, const float* grad_output, const float* lora_input, WeightView weight,
                   const float* lora_a, const float* lora_b, const float* hidden, float scale, DropoutBackward dropout,
                   const void* dropout_context, const AdapterDims& dims) {
  const auto [n, k, m, r] = dims;
  if (grads.bias != nullptr) column_sums(grads.bias, grad_output, n, m);
  if (grads.lora_b != nullptr) {
    matmul_rowmajor(grads.lora_b, grad_output, true, hidden, false, m, r, n, scale, 0.0f);  // s gyᵀ h
  }
  if (grads.lora_a == nullptr && grads.input == nullptr) return;
  FloatBuffer grad_hidden(n * r);
  matmul_rowmajor(grad_hidden.data(), grad_output, false, lora_b, false, n, r, m, 1.0f, 0.0f);  // gy B
  if (grads.lora_a != nullptr) {
    matmul_rowmajor(grads.lora_a, grad_hidden.data(), true, lora_input, false, r, k, n, scale, 0.0f);
  }
  if (grads.input != nullptr) {
    input_gradient(grads.input, grad_output, grad_hidden.data(), weight, lora_a, scale, dropout, dropout_context, dims);
  }
}

namespace {

// `count` elements of a weight widened into float32 `out` (a copy when it is float32 already).
void widen(float* out, WeightView weight, int64_t count) {
  if (weight.f32 != nullptr) {
    std::copy_n(weight.f32, count, out);
    return;
  }
  parallel_for(count, 4096, kParallelElements, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) out[index] = bf16_to_float(weight.bf16[index]);
  });
}

// float32 values rounded to bfloat16 (nearest even), the storage of a merged or restored bfloat16 weight.
void narrow(Bf16* out, const float* values, int64_t count) {
  parallel_for(count, 4096, kParallelElements, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) out[index] = float_to_bf16(values[index]);
  });
}

}  // namespace

void adapter_merge(MutableWeight merged, WeightView weight, const float* lora_a, const float* lora_b,
                   const float* magnitude, const float* norm, float scale, int64_t m, int64_t k, int64_t r) {
  FloatBuffer staging(merged.f32 == nullptr ? m * k : 0);
  float* values = merged.f32 != nullptr ? merged.f32 : staging.data();
  widen(values, weight, m * k);
  matmul_rowmajor(values, lora_b, false, lora_a, false, m, k, r, scale, 1.0f);  // V = W0 + s B A
  if (magnitude != nullptr) {
    parallel_for(m, 1, std::max<int64_t>(1, kParallelElements / std::max<int64_t>(k, 1)),
                 [&](int64_t begin, int64_t end) {
                   for (int64_t row = begin; row < end; ++row) {
                     const float gain = magnitude[row] / norm[row];
                     for (int64_t col = 0; col < k; ++col) values[row * k + col] *= gain;
                   }
                 });
  }
  if (merged.bf16 != nullptr) narrow(merged.bf16, values, m * k);
}

void adapter_unmerge(MutableWeight weight, WeightView merged, const float* lora_a, const float* lora_b,
                     const float* magnitude, const float* norm, float scale, int64_t m, int64_t k, int64_t r) {
  FloatBuffer staging(weight.f32 == nullptr ? m * k : 0);
  float* values = weight.f32 != nullptr ? weight.f32 : staging.data();
  widen(values, merged, m * k);
  if (magnitude != nullptr) {
    parallel_for(m, 1, std::max<int64_t>(1, kParallelElements / std::max<int64_t>(k, 1)),
                 [&](int64_t begin, int64_t end) {
                   for (int64_t row = begin; row < end; ++row) {
                     const float inverse_gain = norm[row] / magnitude[row];
                     for (int64_t col = 0; col < k; ++col) values[row * k + col] *= inverse_gain;
                   }
                 });
  }
  matmul_rowmajor(values, lora_b, false, lora_a, false, m, k, r, -scale, 1.0f);
  if (weight.bf16 != nullptr) narrow(weight.bf16, values, m * k);
}

// ---- references ---------------------------------------------------------------------------------------------------

namespace {

struct ReferenceState {
  std::vector<double> direction;  // V [M,K]
  std::vector<double> norm;       // [M]
  std::vector<double> hidden;     // h = x_d Aᵀ [N,R]
  std::vector<double> combined;   // u [N,M]
};

ReferenceState reference_state(const float* input, const float* lora_input, WeightView weight, const float* lora_a,
                               const float* lora_b, float scale, float eps, const AdapterDims& dims) {
  const auto [n, k, m, r] = dims;
  ReferenceState state;
  state.direction.assign(m * k, 0.0);
  state.norm.assign(m, 0.0);
  for (int64_t j = 0; j < m; ++j) {
    double squared = 0;
    for (int64_t c = 0; c < k; ++c) {
      double value = weight_at(weight, j * k + c);
      for (int64_t p = 0; p < r; ++p) value += static_cast<double>(scale) * lora_b[j * r + p] * lora_a[p * k + c];
      state.direction[j * k + c] = value;
      squared += value * value;
    }
    state.norm[j] = std::max(std::sqrt(squared), static_cast<double>(eps));
  }
  state.hidden.assign(n * r, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t p = 0; p < r; ++p) {
      double total = 0;
      for (int64_t c = 0; c < k; ++c) total += static_cast<double>(lora_input[i * k + c]) * lora_a[p * k + c];
      state.hidden[i * r + p] = total;
    }
  }
  state.combined.assign(n * m, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < m; ++j) {
      double total = 0;
      for (int64_t c = 0; c < k; ++c) total += static_cast<double>(input[i * k + c]) * weight_at(weight, j * k + c);
      for (int64_t p = 0; p < r; ++p) total += scale * state.hidden[i * r + p] * lora_b[j * r + p];
      state.combined[i * m + j] = total;
    }
  }
  return state;
}

}  // namespace

void adapter_forward_reference(float* output, const float* input, const float* lora_input, WeightView weight,
                               const float* bias, const float* lora_a, const float* lora_b, const float* magnitude,
                               float scale, float eps, const AdapterDims& dims) {
  const auto [n, k, m, r] = dims;
  const ReferenceState state = reference_state(input, lora_input, weight, lora_a, lora_b, scale, eps, dims);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < m; ++j) {
      const double gain = magnitude == nullptr ? 1.0 : magnitude[j] / state.norm[j];
      output[i * m + j] = static_cast<float>(gain * state.combined[i * m + j] + (bias == nullptr ? 0.0 : bias[j]));
    }
  }
}

void adapter_backward_reference(const AdapterGrads& grads, const float* grad_output, const float* input,
                                const float* lora_input, const float* lora_input_mask, WeightView weight,
                                const float* lora_a, const float* lora_b, const float* magnitude, float scale,
                                float eps, bool detach_norm, const AdapterDims& dims) {
  const auto [n, k, m, r] = dims;
  const ReferenceState state = reference_state(input, lora_input, weight, lora_a, lora_b, scale, eps, dims);
  // ĝ = dL/du = gy ⊙ gain; for DoRA also dL/dm and dL/dV through the norm, with V formed explicitly.
  std::vector<double> grad_combined(n * m);
  std::vector<double> grad_direction(m * k, 0.0);
  for (int64_t j = 0; j < m; ++j) {
    const double gain = magnitude == nullptr ? 1.0 : magnitude[j] / state.norm[j];
    double dot = 0, total = 0;
    for (int64_t i = 0; i < n; ++i) {
      grad_combined[i * m + j] = grad_output[i * m + j] * gain;
      dot += static_cast<double>(grad_output[i * m + j]) * state.combined[i * m + j];
      total += grad_output[i * m + j];
    }
    if (grads.bias != nullptr) grads.bias[j] = static_cast<float>(total);
    if (magnitude == nullptr) continue;
    if (grads.magnitude != nullptr) grads.magnitude[j] = static_cast<float>(dot / state.norm[j]);
    double squared = 0;
    for (int64_t c = 0; c < k; ++c) squared += state.direction[j * k + c] * state.direction[j * k + c];
    const bool floored = std::sqrt(squared) <= eps;
    if (!detach_norm && !floored) {
      const double grad_norm = -magnitude[j] * dot / (state.norm[j] * state.norm[j]);
      for (int64_t c = 0; c < k; ++c)
        grad_direction[j * k + c] = grad_norm * state.direction[j * k + c] / state.norm[j];
    }
  }
  // u = x W0ᵀ + s h Bᵀ, V = W0 + s B A: dL/dB = s ĝᵀ h + s (dL/dV) Aᵀ, dL/dA = s (ĝ B)ᵀ x_d + s Bᵀ (dL/dV).
  std::vector<double> grad_hidden(n * r, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t p = 0; p < r; ++p) {
      double total = 0;
      for (int64_t j = 0; j < m; ++j) total += grad_combined[i * m + j] * lora_b[j * r + p];
      grad_hidden[i * r + p] = scale * total;
    }
  }
  if (grads.lora_b != nullptr) {
    for (int64_t j = 0; j < m; ++j) {
      for (int64_t p = 0; p < r; ++p) {
        double total = 0;
        for (int64_t i = 0; i < n; ++i) total += grad_combined[i * m + j] * state.hidden[i * r + p];
        for (int64_t c = 0; c < k; ++c) total += grad_direction[j * k + c] * lora_a[p * k + c];
        grads.lora_b[j * r + p] = static_cast<float>(scale * total);
      }
    }
  }
  if (grads.lora_a != nullptr) {
    for (int64_t p = 0; p < r; ++p) {
      for (int64_t c = 0; c < k; ++c) {
        double total = 0;
        for (int64_t i = 0; i < n; ++i) total += grad_hidden[i * r + p] * lora_input[i * k + c];
        double through_direction = 0;
        for (int64_t j = 0; j < m; ++j) through_direction += lora_b[j * r + p] * grad_direction[j * k + c];
        grads.lora_a[p * k + c] = static_cast<float>(total + scale * through_direction);
      }
    }
  }
  if (grads.input != nullptr) {
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t c = 0; c < k; ++c) {
        double base = 0, branch = 0;
        for (int64_t j = 0; j < m; ++j) base += grad_combined[i * m + j] * weight_at(weight, j * k + c);
        for (int64_t p = 0; p < r; ++p) branch += grad_hidden[i * r + p] * lora_a[p * k + c];
        if (lora_input_mask != nullptr) branch *= lora_input_mask[i * k + c];
        grads.input[i * k + c] = static_cast<float>(base + branch);
      }
    }
  }
}

}  // namespace bidora::cpu
