// BiDoRA's orthogonality regulariser of one adapted layer, value and gradients in one pass over factored terms.
//
// Legend: K in-features, M out-features, R rank. weight W0 [M,K] (frozen), lora_a A [R,K], lora_b B [M,R], scale s.
//   V = W0 + s B A (never formed), D = V with each row divided by n_i = max(||V_i||, eps),
//   F = || D Dᵀ − I ||_F.
// Gradients are assigned (=), never accumulated: these are fresh buffers for the caller to add where it keeps them.
#pragma once

#include <cstdint>

#include "../common/bf16.h"

namespace bidora::cpu {

// Returns F and writes dF/dA [R,K] and dF/dB [M,R] (either may be null to skip it), working from the Gram matrix
// C = V Vᵀ = W0 W0ᵀ + s (P Bᵀ + B Pᵀ) + s² B (A Aᵀ) Bᵀ with P = W0 Aᵀ, so no [M,K] temporary is made: the cost is
// O(M² R + R M K) plus [M,M] scratch. weight_gram: W0 W0ᵀ [M,M], cached by the caller while W0 is unchanged.
// With E = C ⊘ (n nᵀ) and Q = (E − I) / F, dF/dC = G = Q ⊘ (n nᵀ) − diag(t_i / n_i²) with t_i = Σ_j Q_ij E_ij (the
// diagonal term only where n_i is not floored), dF/dV = 2 G V, so dF/dB = 2 s G V Aᵀ and dF/dA = 2 s Bᵀ G V. At F = 0
// (D Dᵀ = I exactly, e.g. a single row) the gradients are 0.
double orthogonality_penalty(float* grad_lora_a, float* grad_lora_b, WeightView weight, const float* weight_gram,
                             const float* lora_a, const float* lora_b, float scale, float eps, int64_t m, int64_t k,
                             int64_t r);

}  // namespace bidora::cpu
