// The orthogonality regulariser from factored terms: a few thin GEMMs around elementwise passes over [M,M].
#include "regularizer.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/memory.h"
#include "../core/threadpool.h"
#include "matrix.h"

namespace bidora::cpu {

namespace {

constexpr int64_t kParallelElements = 1 << 15;

// Rows of an [M,M] pass per thread share, so small layers stay on the calling thread.
int64_t min_parallel_rows(int64_t m) { return std::max<int64_t>(1, kParallelElements / std::max<int64_t>(m, 1)); }

}  // namespace

double orthogonality_penalty(float* grad_lora_a, float* grad_lora_b, WeightView weight, const float* weight_gram,
                             const float* lora_a, const float* lora_b, float scale, float eps, int64_t m, int64_t k,
                             int64_t r) {
  const bool need_gradients = grad_lora_a != nullptr || grad_lora_b != nullptr;
  FloatBuffer weight_lora_a(m * r);     // P = W0 Aᵀ [M,R]
  FloatBuffer lora_gram(r * r);         // A Aᵀ [R,R]
  FloatBuffer direction_lora_a(m * r);  // T = V Aᵀ = P + s B (A Aᵀ) [M,R]
  if (weight.f32 != nullptr) {
    matmul_rowmajor(weight_lora_a.data(), weight.f32, false, lora_a, true, m, r, k, 1.0f, 0.0f);
  } else {  // a bfloat16 W0 can only be B: (A W0ᵀ)ᵀ, written transposed
    gemm({weight_lora_a.data(), 1, r, lora_a, k, 1, nullptr, 1, k, r, m, k, 1.0f, 0.0f, weight.bf16});
  }
  matmul_rowmajor(lora_gram.data(), lora_a, false, lora_a, true, r, r, k, 1.0f, 0.0f);
  std::copy_n(weight_lora_a.data(), m * r, direction_lora_a.data());
  matmul_rowmajor(direction_lora_a.data(), lora_b, false, lora_gram.data(), false, m, r, r, scale, 1.0f);

  // C = W0 W0ᵀ + s (U Bᵀ + B Uᵀ) with U = P + (s/2) B (A Aᵀ) = (P + T) / 2: one product of inner size 2R,
  // [U B] [B U]ᵀ, accumulated onto a copy of W0 W0ᵀ. C is symmetric up to rounding; the gradient below assumes
  // symmetry (dF/dV = (G + Gᵀ) V = 2 G V), which costs an error of that rounding's order.
  FloatBuffer left(m * 2 * r);   // [U B]
  FloatBuffer right(m * 2 * r);  // [B U]
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t p = 0; p < r; ++p) {
      const float u = 0.5f * (weight_lora_a.data()[i * r + p] + direction_lora_a.data()[i * r + p]);
      const float b = lora_b[i * r + p];
      left.data()[i * 2 * r + p] = u;
      left.data()[i * 2 * r + r + p] = b;
      right.data()[i * 2 * r + p] = b;
      right.data()[i * 2 * r + r + p] = u;
    }
  }
  FloatBuffer gram(m * m);  // C, then D = E − I, then G = dF/dC, in place
  float* c = gram.data();
  parallel_for(m, 1, min_parallel_rows(m), [&](int64_t begin, int64_t end) {
    std::copy(weight_gram + begin * m, weight_gram + end * m, c + begin * m);
  });
  matmul_rowmajor(c, left.data(), false, right.data(), true, m, m, 2 * r, scale, 1.0f);

  std::vector<double> norm(m), inverse_norm(m);
  std::vector<char> floored(m);
  for (int64_t i = 0; i < m; ++i) {
    const double length = std::sqrt(std::max(0.0, static_cast<double>(c[i * m + i])));
    floored[i] = length <= eps;
    norm[i] = std::max(length, static_cast<double>(eps));
    inverse_norm[i] = 1.0 / norm[i];
  }

  // D = E − I. A row whose norm is not floored has E_ii = 1 exactly, whatever C_ii's rounding, so D_ii = 0 (and F
  // is 0 for a single row, as it should). Row sums of D² in double, then summed in row order: F is the same
  // whatever the thread count.
  std::vector<double> row_squares(m);
  parallel_for(m, 1, min_parallel_rows(m), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float* row = c + i * m;
      const double row_factor = inverse_norm[i];
      const double diagonal = floored[i] ? row[i] * row_factor * row_factor - 1.0 : 0.0;
      double total = diagonal * diagonal;
      row[i] = 0.0f;  // out of the loop below, which then needs no branch
      for (int64_t j = 0; j < m; ++j) {
        const double deviation = row[j] * row_factor * inverse_norm[j];
        row[j] = static_cast<float>(deviation);
        total += deviation * deviation;
      }
      row[i] = static_cast<float>(diagonal);
      row_squares[i] = total;
    }
  });
  double sum_of_squares = 0;
  for (double value : row_squares) sum_of_squares += value;
  const double penalty = std::sqrt(sum_of_squares);

  if (!need_gradients) return penalty;
  if (penalty == 0.0) {
    // D Dᵀ = I: F is not differentiable here (a cone's tip); 0 is its minimal subgradient.
    if (grad_lora_a != nullptr) std::fill_n(grad_lora_a, r * k, 0.0f);
    if (grad_lora_b != nullptr) std::fill_n(grad_lora_b, m * r, 0.0f);
    return penalty;
  }

  // G = Q ⊘ (n nᵀ) − diag(t_i / n_i²), Q = D / F, t_i = Σ_j Q_ij E_ij = Σ_j D_ij (D_ij + δ_ij) / F, which is
  // Σ_j D_ij² / F where D_ii = 0. Where n_i is floored it is a constant: no term through it.
  parallel_for(m, 1, min_parallel_rows(m), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float* row = c + i * m;
      const double row_factor = inverse_norm[i] / penalty;
      for (int64_t j = 0; j < m; ++j) row[j] = static_cast<float>(row[j] * row_factor * inverse_norm[j]);
      if (!floored[i]) {
        const double through_norm = row_squares[i] / penalty;
        row[i] = static_cast<float>(row[i] - through_norm * inverse_norm[i] * inverse_norm[i]);
      }
    }
  });
  const float* g = c;

  // dF/dB = 2 s G V Aᵀ = 2 s G T.
  if (grad_lora_b != nullptr) {
    matmul_rowmajor(grad_lora_b, g, false, direction_lora_a.data(), false, m, r, m, 2.0f * scale, 0.0f);
  }
  // dF/dA = 2 s Bᵀ G V = 2 s (Bᵀ G) W0 + 2 s² ((Bᵀ G) B) A.
  if (grad_lora_a != nullptr) {
    FloatBuffer lora_b_g(r * m);
    FloatBuffer lora_b_g_lora_b(r * r);
    matmul_rowmajor(lora_b_g.data(), lora_b, true, g, false, r, m, m, 1.0f, 0.0f);
    matmul_rowmajor(grad_lora_a, lora_b_g.data(), false, weight, false, r, k, m, 2.0f * scale, 0.0f);
    matmul_rowmajor(lora_b_g_lora_b.data(), lora_b_g.data(), false, lora_b, false, r, r, m, 1.0f, 0.0f);
    matmul_rowmajor(grad_lora_a, lora_b_g_lora_b.data(), false, lora_a, false, r, k, r, 2.0f * scale * scale, 1.0f);
  }
  return penalty;
}

}  // namespace bidora::cpu
