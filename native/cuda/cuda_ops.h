// The CUDA launchers: host functions that take device pointers and a stream and only enqueue work (no allocation,
// no synchronisation), for the binding and the GPU check to call. Errors surface the CUDA way: the caller checks
// cudaGetLastError() after a launch or the status of a later synchronisation.
//
// Legend: N tokens, K in-features, M out-features, R rank (adapter layers); n elements; rows x D for row ops.
// Outputs first, then inputs, then dims, then the workspace and the stream. Gradients are assigned (=) into fresh
// buffers, never accumulated, like native/cpu. Every reduction runs in a fixed order: results are the same run to
// run on one GPU and do not depend on the device's SM count.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "../common/ops.h"
#include "nn_math.cuh"  // AdamwScalars, SgdScalars

namespace bidora::cuda {

// How many GPUs this process can run the kernels on (compute capability 8.0 or newer: TF32 and BF16 tensor cores);
// 0 without a GPU or a driver. Prints nothing and leaves no CUDA error behind.
int usable_device_count();

// ---- memory and errors, for the binding's device tensors (all on the current device, the default stream) --------
// Each throws bidora::RangeError with CUDA's own message on failure (out of memory, a kernel fault surfacing at a
// synchronising copy), prefixed by `function`.

// count floats of device memory (nullptr for 0), from the device's stream-ordered pool. Freed with free_floats, which
// returns the block to the pool without waiting for the GPU.
float* allocate_floats(int64_t count, const char* function);
void free_floats(float* pointer);
// Waits for the GPU, then hands the pool's free blocks back to the driver; returns their bytes (emptyCache()).
int64_t release_cached_device_memory();
// Synchronous copies: they wait for every kernel queued before them, so a read sees finished results.
void copy_to_device(float* device, const float* host, int64_t count, const char* function);
void copy_to_host(float* host, const float* device, int64_t count, const char* function);
void copy_on_device(float* destination, const float* source, int64_t count, const char* function);
void copy_ints_to_device(int32_t* device, const int32_t* host, int64_t count, const char* function);
// Throws if the launches queued so far by `function` failed to start (bad configuration, no kernel image).
void check_launch(const char* function);
// Scratch on the device that grows and is reused by every call on this host thread: launches are ordered on the
// default stream, so a call may reuse what an earlier one finished with. Slots 0-3 are independent buffers.
void* scratch(int slot, size_t bytes, const char* function);

// ---- GEMM ---------------------------------------------------------------------------------------------------------

// kTf32 and kBf16 round the inputs for tensor cores (WMMA) and accumulate in float32; kFloat32 is a plain tiled
// kernel in float32 throughout.
using GemmPrecision = ops::Precision;  // kFloat32, kTf32, kBf16

// Optional scratch for split-K (a long K with few output tiles); too small or null: no split.
struct GemmScratch {
  float* data = nullptr;
  size_t floats = 0;
};

// C [M,N] = alpha op(A) op(B) + beta C, row-major; op(A) [M,K] is A stored [M,K] or [K,M] (a_transposed), op(B)
// [K,N] is B stored [K,N] or [N,K] (b_transposed). beta == 0: C is only written. Any M, N, K (K = 0 gives beta C).
void gemm(float* c, const float* a, bool a_transposed, const float* b, bool b_transposed, int64_t m, int64_t n,
          int64_t k, float alpha, float beta, GemmPrecision precision, GemmScratch scratch, cudaStream_t stream);
// The same where either operand may be bfloat16 (a frozen weight, ../common/bf16.h): then BF16 tensor cores run it
// whatever `precision` says, the float32 operand rounded to bfloat16 (nearest even) on its way to shared memory.
void gemm(float* c, WeightView a, bool a_transposed, WeightView b, bool b_transposed, int64_t m, int64_t n, int64_t k,
          float alpha, float beta, GemmPrecision precision, GemmScratch scratch, cudaStream_t stream);
// An activation as a gemm operand beside a WeightView.
inline WeightView float32(const float* values) { return {values, nullptr}; }

// ---- fused DoRA and LoRA (same formulas as native/cpu/dora.h) ------------------------------------------------------

using AdapterDims = ops::AdapterDims;
// What backward writes; a null pointer skips that gradient and every product only it needs.
using AdapterGrads = ops::AdapterGrads;

// Bytes of device scratch every adapter launcher below needs for these dims (256-byte aligned pointer).
size_t adapter_workspace_bytes(const AdapterDims& dims);

// ||W0_j||² for every row [M], accumulated in double.
void row_sq_norms(float* out, WeightView weight, int64_t m, int64_t k, cudaStream_t stream);

// n [M], W0 Aᵀ [M,R] and A Aᵀ [R,R] from the factored form (no [M,K] buffer). The factors are float32 products
// whatever the layer's precision (n² is a difference of large terms), but for a bfloat16 W0: W0 Aᵀ then runs on BF16
// tensor cores like every product with it (A rounded to bfloat16), as on CPUs with AVX512-BF16.
void dora_norm(float* norm, float* weight_lora_a, float* lora_gram, WeightView weight, const float* weight_sq_norms,
               const float* lora_a, const float* lora_b, float scale, float eps, const AdapterDims& dims,
               void* workspace, cudaStream_t stream);

// combined [N,M] receives u = x W0ᵀ + s h Bᵀ (saved for backward), hidden [N,R] receives h = x_d Aᵀ, norm and its
// factors as dora_norm. bias may be null. lora_input is x after dropout (the same pointer as input without it).
void dora_forward(float* output, float* combined, float* hidden, float* norm, float* weight_lora_a, float* lora_gram,
                  const float* input, const float* lora_input, WeightView weight, const float* weight_sq_norms,
                  const float* bias, const float* lora_a, const float* lora_b, const float* magnitude, float scale,
                  float eps, const AdapterDims& dims, GemmPrecision precision, void* workspace, cudaStream_t stream);

// `combined` holds u on entry and is overwritten with (m / n) ⊙ grad_output. detach_norm: n is a constant (PEFT)
// or differentiated through. dropout_scale [N,K]: the branch's mask / (1 − p), or null without dropout.
void dora_backward(const AdapterGrads& grads, float* combined, const float* grad_output, const float* lora_input,
                   const float* dropout_scale, WeightView weight, const float* lora_a, const float* lora_b,
                   const float* magnitude, const float* norm, const float* hidden, const float* weight_lora_a,
                   const float* lora_gram, float scale, float eps, bool detach_norm, const AdapterDims& dims,
                   GemmPrecision precision, void* workspace, cudaStream_t stream);

void lora_forward(float* output, float* hidden, const float* input, const float* lora_input, WeightView weight,
                  const float* bias, const float* lora_a, const float* lora_b, float scale, const AdapterDims& dims,
                  GemmPrecision precision, void* workspace, cudaStream_t stream);

void lora_backward(const AdapterGrads& grads, const float* grad_output, const float* lora_input,
                   const float* dropout_scale, WeightView weight, const float* lora_a, const float* lora_b,
                   const float* hidden, float scale, const AdapterDims& dims, GemmPrecision precision, void* workspace,
                   cudaStream_t stream);

// ---- elementwise (b repeats every `period` elements of a: period == n same shape, less a trailing broadcast) ------

void add(float* out, const float* a, const float* b, int64_t n, int64_t period, cudaStream_t stream);
void sub(float* out, const float* a, const float* b, int64_t n, int64_t period, cudaStream_t stream);
void mul(float* out, const float* a, const float* b, int64_t n, int64_t period, cudaStream_t stream);
void scale(float* out, const float* a, float alpha, int64_t n, cudaStream_t stream);
void axpy(float* y, float alpha, const float* x, int64_t n, cudaStream_t stream);  // y += alpha x

// ---- axis reductions and layout copies (same contracts as native/cpu/elementwise.h, narrow.h and nn.h) -----------
// Tensors read as [outer, axis, inner]; the sums run in double, in a fixed order.

void sum_axis(float* out, const float* a, int64_t outer, int64_t axis, int64_t inner, cudaStream_t stream);
void broadcast_axis(float* out, const float* a, int64_t outer, int64_t axis, int64_t inner, cudaStream_t stream);
void narrow(float* out, const float* a, int64_t outer, int64_t axis, int64_t inner, int64_t start, int64_t length,
            cudaStream_t stream);
void narrow_backward(float* out, const float* grad, int64_t outer, int64_t axis, int64_t inner, int64_t start,
                     int64_t length, cudaStream_t stream);
// x [a,b,c,d] → out [a,c,b,d] (splitting heads and merging them back).
void permute_0213(float* out, const float* x, int64_t a, int64_t b, int64_t c, int64_t d, cudaStream_t stream);

// ---- nn (same contracts as native/cpu/nn.h) ----------------------------------------------------------------------

void relu_forward(float* out, const float* x, int64_t n, cudaStream_t stream);
void relu_backward(float* grad_x, const float* x, const float* grad_out, int64_t n, cudaStream_t stream);
void tanh_forward(float* out, const float* x, int64_t n, cudaStream_t stream);
void tanh_backward(float* grad_x, const float* out, const float* grad_out, int64_t n, cudaStream_t stream);
void gelu_tanh_forward(float* out, const float* x, int64_t n, cudaStream_t stream);
void gelu_tanh_backward(float* grad_x, const float* x, const float* grad_out, int64_t n, cudaStream_t stream);
void silu_forward(float* out, const float* x, int64_t n, cudaStream_t stream);
void silu_backward(float* grad_x, const float* x, const float* grad_out, int64_t n, cudaStream_t stream);
void swiglu_forward(float* out, const float* gate, const float* up, int64_t n, cudaStream_t stream);
void swiglu_backward(float* grad_gate, float* grad_up, const float* gate, const float* up, const float* grad_out,
                     int64_t n, cudaStream_t stream);

// Inverted dropout with native/cpu/random's mask (random_math.cuh): the same elements kept on both devices. in may
// be null: out then receives the scale keep / (1 − p) itself.
void dropout(float* out, const float* in, int64_t n, float p, uint64_t seed, cudaStream_t stream);

// loss: one float, mean((prediction − target)²) (0 for n = 0).
void mse_loss_forward(float* loss, const float* prediction, const float* target, int64_t n, cudaStream_t stream);
void mse_loss_backward(float* grad_prediction, const float* prediction, const float* target, float grad_loss, int64_t n,
                       cudaStream_t stream);

// loss: one float, the mean of BCE with logits over n elements (0 for n = 0); its gradient grad_loss (σ(z) − y) / n.
void bce_with_logits_forward(float* loss, const float* logits, const float* targets, int64_t n, cudaStream_t stream);
void bce_with_logits_backward(float* grad_logits, const float* logits, const float* targets, float grad_loss, int64_t n,
                              cudaStream_t stream);

// Fused attention (../common/ops.h's Attention, the CPU's masks and dropout draw). The backward takes row_dots,
// [batch · heads · Lq] floats of scratch. Head sizes up to what fits the device's shared memory (a few hundred).
void attention_forward(const ops::Attention& args, cudaStream_t stream);
void attention_backward(const ops::AttentionBackward& args, float* row_dots, cudaStream_t stream);

// Rotary position embeddings (../common/position_math.h): x [batch, heads, seq, d], positions [batch, seq] on the
// device; inverse turns the pairs back (the gradient).
void rotary(float* out, const float* x, const int32_t* positions, int64_t batch, int64_t heads, int64_t seq, int64_t d,
            float base, bool inverse, cudaStream_t stream);

void gelu_forward(float* out, const float* x, int64_t n, cudaStream_t stream);
void gelu_backward(float* grad_x, const float* x, const float* grad_out, int64_t n, cudaStream_t stream);

void layer_norm_forward(float* out, float* mean, float* rstd, const float* x, const float* gamma, const float* beta,
                        float eps, int64_t rows, int64_t d, cudaStream_t stream);
void layer_norm_backward(float* grad_x, float* grad_gamma, float* grad_beta, const float* grad_out, const float* x,
                         const float* gamma, const float* mean, const float* rstd, int64_t rows, int64_t d,
                         cudaStream_t stream);

void rms_norm_forward(float* out, float* rstd, const float* x, const float* weight, float eps, int64_t rows, int64_t d,
                      cudaStream_t stream);
void rms_norm_backward(float* grad_x, float* grad_weight, const float* grad_out, const float* x, const float* weight,
                       const float* rstd, int64_t rows, int64_t d, cudaStream_t stream);

// x read as [batch, rows_per_batch, D]; mask (nullable) [batch, D].
void softmax_forward(float* out, const float* x, const float* mask, int64_t batch, int64_t rows_per_batch, int64_t d,
                     cudaStream_t stream);
void softmax_backward(float* grad_x, const float* out, const float* grad_out, int64_t rows, int64_t d,
                      cudaStream_t stream);

// loss: one float, the mean over rows whose label is not ignore_index (0 if none). row_losses: [N] scratch. Labels
// are device int32, trusted in range (the binding checks them).
void cross_entropy_forward(float* loss, float* row_losses, const float* logits, const int32_t* labels,
                           int32_t ignore_index, int64_t rows, int64_t c, cudaStream_t stream);
// row_scale: one float of scratch (grad_loss / counted rows, computed on the device).
void cross_entropy_backward(float* grad_logits, float* row_scale, const float* logits, const int32_t* labels,
                            int32_t ignore_index, float grad_loss, int64_t rows, int64_t c, cudaStream_t stream);

void embedding_forward(float* out, WeightView weight, const int32_t* ids, int64_t n, int64_t d, cudaStream_t stream);
// Deterministic scatter-add without atomics. The ids live on the host in the binding (an Int32Array), so a stable
// counting sort runs there (embedding_backward_plan, nn_math.cuh: order [n], row_start [V + 1]); the kernel takes
// device copies and sums each vocabulary row's positions in that order, writing every row (zeros where unused).
void embedding_backward(float* grad_weight, const float* grad_out, const int32_t* order, const int32_t* row_start,
                        int64_t v, int64_t d, cudaStream_t stream);

// ---- optimizer and hypergradient, over lists of tensors (host arrays of device pointers) -------------------------

// One AdamW step per tensor (../common/optim_math.h: adamw_update, with adamw_scalars for the step): param, moment1,
// moment2 updated in place from grad.
void adamw_step(float* const* params, float* const* moment1, float* const* moment2, const float* const* grads,
                const int64_t* sizes, int count, const AdamwScalars& scalars, cudaStream_t stream);

// One SGD step per tensor (../common/optim_math.h: sgd_update), param and momentum buffer updated in place from grad;
// momentum_buffers null: plain SGD (momentum 0).
void sgd_step(float* const* params, float* const* momentum_buffers, const float* const* grads, const int64_t* sizes,
              int count, const SgdScalars& scalars, cudaStream_t stream);

// Blocks per tensor of the first pass of list_global_norm: the partition is fixed, so the sum order is too.
constexpr int kNormPartialsPerTensor = 64;
// norm (one float) = sqrt(Σ over tensors of Σ x²), in double, in two deterministic passes; partials: scratch of
// count * kNormPartialsPerTensor doubles.
void list_global_norm(float* norm, double* partials, const float* const* tensors, const int64_t* sizes, int count,
                      cudaStream_t stream);
// epsilon (one float) = radius / norm, 0 for a zero norm.
void perturbation_epsilon(float* epsilon, const float* norm, float radius, cudaStream_t stream);
// θ_i += alpha · (*device_factor) · v_i for every tensor, in place (device_factor null: alpha alone). With ε from
// perturbation_epsilon: alpha = +1 gives θ + εv, then alpha = −2 gives θ − εv.
void list_axpy(float* const* thetas, const float* const* directions, const int64_t* sizes, int count, float alpha,
               const float* device_factor, cudaStream_t stream);
// direct_i −= factor (plus_i − minus_i) in place, as native/cpu/optim.h's combine_hypergradient (factor = ξ / (2ε)).
void combine_hypergradient(float* const* direct, const float* const* plus, const float* const* minus, float factor,
                           const int64_t* sizes, int count, cudaStream_t stream);

}  // namespace bidora::cuda
