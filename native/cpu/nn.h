// The neural-network kernels a BERT-family encoder needs besides GEMM: activations, layer norm, softmax, embedding
// lookup, the head permute, losses. Forward and backward side by side; every entry point splits its work by rows
// (or by vocabulary rows, or by columns for parameter gradients), so results do not depend on the thread count.
//
// Legend: n elements; N rows (every axis but the last, flattened); D the last axis (features, keys, classes);
// V vocabulary rows; C classes. Outputs first, then inputs, then dims. Every gradient, parameter gradients
// included, is assigned (=) into a fresh buffer: callers accumulate where they keep them.
// Integer ids and labels are trusted here: the binding has checked their range.
#pragma once

#include <cstdint>

namespace bidora::cpu {

// GELU in its erf form, 0.5 x (1 + erf(x / √2)), as BERT's hidden_act "gelu".
void gelu_forward(float* out, const float* x, int64_t n);
void gelu_backward(float* grad_x, const float* x, const float* grad_out, int64_t n);

void relu_forward(float* out, const float* x, int64_t n);
void relu_backward(float* grad_x, const float* x, const float* grad_out, int64_t n);

// tanh's backward reads the forward's output: dx = dy (1 − y²).
void tanh_forward(float* out, const float* x, int64_t n);
void tanh_backward(float* grad_x, const float* out, const float* grad_out, int64_t n);

// GELU's tanh approximation, 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))), as GPT-2's hidden_act "gelu_new".
void gelu_tanh_forward(float* out, const float* x, int64_t n);
void gelu_tanh_backward(float* grad_x, const float* x, const float* grad_out, int64_t n);

// SiLU, x σ(x); SwiGLU, silu(gate) ⊙ up (Llama's MLP), with both inputs' gradients.
void silu_forward(float* out, const float* x, int64_t n);
void silu_backward(float* grad_x, const float* x, const float* grad_out, int64_t n);
void swiglu_forward(float* out, const float* gate, const float* up, int64_t n);
void swiglu_backward(float* grad_gate, float* grad_up, const float* gate, const float* up, const float* grad_out,
                     int64_t n);

// Over the last axis: out = (x − mean) · rstd · gamma + beta, rstd = 1 / sqrt(biased variance + eps). Statistics
// in double; mean and rstd [N] are saved for backward.
void layer_norm_forward(float* out, float* mean, float* rstd, const float* x, const float* gamma, const float* beta,
                        float eps, int64_t rows, int64_t d);
void layer_norm_backward(float* grad_x, float* grad_gamma, float* grad_beta, const float* grad_out, const float* x,
                         const float* gamma, const float* mean, const float* rstd, int64_t rows, int64_t d);

// Llama's RMSNorm over the last axis: out = weight ⊙ x · rstd, rstd = 1 / sqrt(mean(x²) + eps), the sum of squares
// in double; rstd [N] is saved for backward.
void rms_norm_forward(float* out, float* rstd, const float* x, const float* weight, float eps, int64_t rows, int64_t d);
void rms_norm_backward(float* grad_x, float* grad_weight, const float* grad_out, const float* x, const float* weight,
                       const float* rstd, int64_t rows, int64_t d);

// Softmax over the last axis of x read as [batch, rows_per_batch, D]. mask (nullable) is [batch, D]: zero masks a
// key for every row of that batch entry, any other value attends. Masked keys get exactly 0; a row with every key
// masked is all zeros.
void softmax_forward(float* out, const float* x, const float* mask, int64_t batch, int64_t rows_per_batch, int64_t d);
// dx = y ⊙ (dy − Σ dy·y) per row.
void softmax_backward(float* grad_x, const float* out, const float* grad_out, int64_t rows, int64_t d);

// out[i] = weight[ids[i]]: out [n, D], weight [V, D].
void embedding_forward(float* out, const float* weight, const int32_t* ids, int64_t n, int64_t d);
// grad_weight [V, D] = scatter-add of grad_out [n, D] rows at ids. Deterministic without atomics: a counting sort
// groups the positions of each id in ascending order, then each thread owns a range of vocabulary rows.
void embedding_backward(float* grad_weight, const float* grad_out, const int32_t* ids, int64_t n, int64_t v, int64_t d);

// [a, b, c, d] -> [a, c, b, d]: the attention head split and merge. Its own inverse.
void permute_0213(float* out, const float* x, int64_t a, int64_t b, int64_t c, int64_t d);

// Mean over rows whose label is not ignore_index of logsumexp(logits_row) − logits_row[label]; 0 if every row is
// ignored. logits [N, C], loss a single float. Row losses are summed in double, in row order.
void cross_entropy_forward(float* loss, const float* logits, const int32_t* labels, int32_t ignore_index, int64_t rows,
                           int64_t c);
// grad_logits = grad_loss · (softmax − onehot) / counted rows; ignored rows are zero.
void cross_entropy_backward(float* grad_logits, const float* logits, const int32_t* labels, int32_t ignore_index,
                            float grad_loss, int64_t rows, int64_t c);

// Mean of squared differences (0 for n = 0), accumulated in double in fixed chunks.
void mse_loss_forward(float* loss, const float* prediction, const float* target, int64_t n);
// grad_prediction = 2 · grad_loss · (prediction − target) / n.
void mse_loss_backward(float* grad_prediction, const float* prediction, const float* target, float grad_loss,
                       int64_t n);

// Mean over n elements of BCE with logits, max(z, 0) − z·y + log(1 + exp(−|z|)) (0 for n = 0), in double in fixed
// chunks; targets y are probabilities (multi-label classification: 0 or 1 per class).
void bce_with_logits_forward(float* loss, const float* logits, const float* targets, int64_t n);
// grad_logits = grad_loss · (σ(z) − y) / n.
void bce_with_logits_backward(float* grad_logits, const float* logits, const float* targets, float grad_loss,
                              int64_t n);

// Rotary position embeddings: x [batch, heads, seq, d] with each (token, head) row's pairs (x_i, x_{i+d/2}) turned by
// positions[b, s] · base^(−2i/d) radians (transformers' rotate_half layout); inverse turns them back (the gradient).
// positions [batch, seq], d even. Row order and arithmetic do not depend on the thread count.
void rotary(float* out, const float* x, const int32_t* positions, int64_t batch, int64_t heads, int64_t seq, int64_t d,
            float base, bool inverse);

}  // namespace bidora::cpu
