// The fused DoRA and LoRA layer: forward and backward side by side, the factored row norm, merge and unmerge, and a
// plain double-precision reference of each that forms the direction matrix explicitly.
//
// Legend: N tokens, K in-features, M out-features, R rank. Weights in PEFT orientation, row-major:
//   weight W0 [M,K] (frozen), lora_a A [R,K], lora_b B [M,R], magnitude m [M], bias [M], scale s.
//   Direction V = W0 + s B A (never formed by the fast kernels), norm n_j = max(||V_j||, eps).
//   LoRA:  y = x W0ᵀ + s (x_d Aᵀ) Bᵀ + bias                  (x_d: the input after dropout, x without it)
//   DoRA:  y = (m / n) ⊙ (x W0ᵀ + s (x_d Aᵀ) Bᵀ) + bias
// Gradients are assigned (=), never accumulated: these are fresh buffers for the caller to add where it keeps them.
#pragma once

#include <cstdint>

#include "../common/bf16.h"
#include "../common/ops.h"

namespace bidora::cpu {

using AdapterDims = ops::AdapterDims;
using AdapterGrads = ops::AdapterGrads;

// W0 is float32 or bfloat16 (models loaded with dtype 'bfloat16'); every product with it goes through gemm()'s
// bfloat16-B form (gemm.h states its rounding), and the norms and references widen it exactly.
// Where a merge writes a weight: float32 or bfloat16 (rounded to nearest even), exactly one set.
struct MutableWeight {
  float* f32;
  Bf16* bf16;
};

// n_j² = ||W0_j||² + 2 s (W0 Aᵀ)_j · B_j + s² B_j (A Aᵀ) B_jᵀ, accumulated in float32 and clamped at 0 against
// cancellation; n_j = max(sqrt(n_j²), eps). Also returns W0 Aᵀ [M,R] and A Aᵀ [R,R], which backward reuses.
// weight_sq_norms: ||W0_j||² [M], cached by the caller while W0 is unchanged.
void dora_norm(float* norm, float* weight_lora_a, float* lora_gram, WeightView weight, const float* weight_sq_norms,
               const float* lora_a, const float* lora_b, float scale, float eps, int64_t m, int64_t k, int64_t r);

// ||W0_j||² for every row, accumulated in double.
void row_sq_norms(float* out, WeightView weight, int64_t m, int64_t k);

// DoRA forward, norm included, as the CUDA backend's: combined [N,M] receives u = x W0ᵀ + s h Bᵀ (saved for backward),
// hidden [N,R] receives h = x_d Aᵀ, norm [M], weight_lora_a [M,R] and lora_gram [R,R] what dora_norm writes. bias
// may be null. u = x W0ᵀ and W0 Aᵀ come from one product (B streamed once), so this costs about a LoRA forward plus
// R/N of its base product.
void dora_forward(float* output, float* combined, float* hidden, float* norm, float* weight_lora_a, float* lora_gram,
                  const float* input, const float* lora_input, WeightView weight, const float* weight_sq_norms,
                  const float* bias, const float* lora_a, const float* lora_b, const float* magnitude, float scale,
                  float eps, const AdapterDims& dims);

// Applies dropout's backward to the low-rank branch's input gradient (scales by mask / (1 - p)); null when the
// forward ran without dropout.
using DropoutBackward = void (*)(float* values, int64_t count, const void* context);

// DoRA backward. `combined` holds u from forward on entry and is overwritten (with (m / n) ⊙ grad_output), so
// backward runs once per forward. detach_norm: treat n as a constant (PEFT) or differentiate through it.
void dora_backward(const AdapterGrads& grads, float* combined, const float* grad_output, const float* lora_input,
                   WeightView weight, const float* lora_a, const float* lora_b, const float* magnitude,
                   const float* norm, const float* hidden, const float* weight_lora_a, const float* lora_gram,
                   float scale, float eps, bool detach_norm, DropoutBackward dropout, const void* dropout_context,
                   const AdapterDims& dims);

// LoRA forward: hidden [N,R] receives h = x_d Aᵀ (saved for backward).
void lora_forward(float* output, float* hidden, const float* input, const float* lora_input, WeightView weight,
                  const float* bias, const float* lora_a, const float* lora_b, float scale, const AdapterDims& dims);

void lora_backward(const AdapterGrads& grads, const float* grad_output, const float* lora_input, WeightView weight,
                   const float* lora_a, const float* lora_b, const float* hidden, float scale, DropoutBackward dropout,
                   const void* dropout_context, const AdapterDims& dims);

// merged = (m / n) ⊙ (W0 + s B A) for DoRA (magnitude and norm given), W0 + s B A for LoRA (both null).
void adapter_merge(MutableWeight merged, WeightView weight, const float* lora_a, const float* lora_b,
                   const float* magnitude, const float* norm, float scale, int64_t m, int64_t k, int64_t r);
// The inverse: W0 = merged ⊙ (n / m) − s B A (DoRA, with the norm from before merging), merged − s B A (LoRA).
void adapter_unmerge(MutableWeight weight, WeightView merged, const float* lora_a, const float* lora_b,
                     const float* magnitude, const float* norm, float scale, int64_t m, int64_t k, int64_t r);

// ---- references: plain loops in double that form V explicitly (magnitude null = LoRA) --------------------------

void adapter_forward_reference(float* output, const float* input, const float* lora_input, WeightView weight,
                               const float* bias, const float* lora_a, const float* lora_b, const float* magnitude,
                               float scale, float eps, const AdapterDims& dims);

// `lora_input_mask` scales the low-rank branch's input gradient elementwise (dropout's mask / (1 - p)); null: none.
void adapter_backward_reference(const AdapterGrads& grads, const float* grad_output, const float* input,
                                const float* lora_input, const float* lora_input_mask, WeightView weight,
                                const float* lora_a, const float* lora_b, const float* magnitude, float scale,
                                float eps, bool detach_norm, const AdapterDims& dims);

}  // namespace bidora::cpu
