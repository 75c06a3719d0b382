// Per-row math of the fused DoRA kernels, shared by the CUDA kernels and the host test: the factored row norm, the
// gain m / n, and the coefficient that carries the gradient through the norm. native/cpu/dora.cc calls these too.
//
// Legend: N tokens, K in-features, M out-features, R rank. W0 [M,K], A [R,K], B [M,R], m [M], scale s.
//   V = W0 + s B A (never formed), n_j = max(||V_j||, eps).
#pragma once

#include <math.h>

#include "host_device.h"

namespace bidora::cuda {

// n_j² = ||W0_j||² + 2 s (W0 Aᵀ)_j · B_j + s² B_j (A Aᵀ) B_jᵀ in float32, clamped at 0 against cancellation.
// weight_lora_a_row: (W0 Aᵀ)_j [R]; lora_gram: A Aᵀ [R,R]; lora_b_row: B_j [R].
BIDORA_HD float dora_row_norm(const float* weight_lora_a_row, const float* lora_gram, const float* lora_b_row,
                              float weight_sq_norm, float scale, float eps, int64_t r) {
  float cross = 0.0f;      // (W0 Aᵀ)_j · B_j
  float quadratic = 0.0f;  // B_j (A Aᵀ) B_jᵀ
  for (int64_t p = 0; p < r; ++p) {
    cross += weight_lora_a_row[p] * lora_b_row[p];
    float gram_b = 0.0f;
    for (int64_t q = 0; q < r; ++q) gram_b += lora_gram[p * r + q] * lora_b_row[q];
    quadratic += lora_b_row[p] * gram_b;
  }
  const float squared = weight_sq_norm + 2.0f * scale * cross + scale * scale * quadratic;
  const float root = sqrtf(squared > 0.0f ? squared : 0.0f);
  return root > eps ? root : eps;
}

// dL/dV_j = c_j V_j with c_j = −m_j (Σ_i gy_ij u_ij) / n_j³ (dL/dn_j = −m_j Σ gy u / n_j², dn_j/dV_j = V_j / n_j).
// A norm floored at eps is a constant: c_j = 0. column_dot: Σ_i gy_ij u_ij, accumulated in double.
BIDORA_HD float dora_norm_coefficient(float magnitude, double column_dot, float norm, float eps) {
  const double n = norm;
  return norm <= eps ? 0.0f : static_cast<float>(-magnitude * column_dot / (n * n * n));
}

// The norm's share of dL/dB_jp: s c_j (V Aᵀ)_jp with V Aᵀ = W0 Aᵀ + s B (A Aᵀ), all [M,R].
BIDORA_HD float dora_lora_b_norm_term(const float* weight_lora_a_row, const float* lora_gram, const float* lora_b_row,
                                      float coefficient, float scale, int64_t p, int64_t r) {
  float b_gram = 0.0f;
  for (int64_t q = 0; q < r; ++q) b_gram += lora_b_row[q] * lora_gram[q * r + p];
  return scale * coefficient * (weight_lora_a_row[p] + scale * b_gram);
}

}  // namespace bidora::cuda
