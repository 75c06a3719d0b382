// The op contract both backends implement: one argument struct per op, and the table of functions a backend fills
// (native/cpu/backend.cc, native/cuda/backend.cu). Compiled by the host compiler and by nvcc; no Node-API here. The
// binding checks every argument, allocates the outputs on the tensors' device and calls one entry of one table; the
// GPU check (bench/gpu/cuda_check.cu) calls the CUDA table the same way.
//
// Pointers are on the op's device, except where a field says "host" (ids and labels, which the binding range-checks
// in host memory; lists of tensor pointers). Outputs first, then inputs, then dims, then scalars. A frozen weight may
// be bfloat16 (bf16.h): its `*_bf16` field is set and its float pointer null; every other tensor is float32. Legend: n
// elements; rows x D for row ops; N tokens, K in-features, M out-features, R rank for adapter layers.
#pragma once

#include <cstddef>
#include <cstdint>

#include "bf16.h"

namespace bidora::ops {

// How GPU products round their inputs (setMatmulPrecision); the CPU is float32 whatever this says.
enum class Precision { kFloat32, kTf32, kBf16 };

// ---- creation ----------------------------------------------------------------------------------------------------

enum class Distribution { kNormal, kUniform };

// out [n]: seeded samples, element i from (seed, i) alone; normal (mean a, std b) or uniform on [a, b).
struct Fill {
  float* out;
  int64_t n;
  Distribution distribution;
  uint64_t seed;
  float a, b;
};

// ---- elementwise and reductions ----------------------------------------------------------------------------------

enum class BinaryOp { kAdd, kSub, kMul };

// out = a op b, b repeated every `period` elements of a (period == n: same shape; less: a trailing broadcast).
struct Binary {
  BinaryOp op;
  float* out;
  const float *a, *b;
  int64_t n, period;
};

struct Scale {  // out = alpha a
  float* out;
  const float* a;
  int64_t n;
  float alpha;
};

struct Axpy {  // y += alpha x
  float* y;
  const float* x;
  int64_t n;
  float alpha;
};

// a read as [outer, axis, inner]: out [outer, inner] = Σ over the axis, in double (SumAxis); out [outer, axis, inner]
// = a [outer, inner] repeated along it (BroadcastAxis, the gradient of a sum).
struct AxisCopy {
  float* out;
  const float* a;
  int64_t outer, axis, inner;
};

// out [outer, length, inner] = a[:, start : start + length, :] (Narrow); the reverse into zeros [outer, axis, inner]
// (NarrowBackward, `a` then being the gradient).
struct Narrow {
  float* out;
  const float* a;
  int64_t outer, axis, inner, start, length;
};

// *norm (host) = sqrt(Σ over every tensor of Σ x²), accumulated in double.
struct GlobalNorm {
  double* norm;
  const float* const* tensors;  // host array of `count` pointers
  const int64_t* lengths;       // host
  int64_t count;
};

// ---- linear algebra ----------------------------------------------------------------------------------------------

// out [batch, m, n] = op(a) op(b) per batch, op(a) [m, k] stored [m, k] or [k, m] (transpose_a), op(b) [k, n] stored
// [k, n] or [n, k]; shared_b: one b for every batch.
struct Matmul {
  float* out;
  const float *a, *b;
  int64_t batch, m, n, k;
  bool transpose_a, transpose_b, shared_b;
  Precision precision;
  const Bf16* b_bf16;  // b as bfloat16 (b null)
};

// out [rows, m] = input [rows, k] weightᵀ (weight [m, k]) + bias [m] (nullable).
struct Linear {
  float* out;
  const float *input, *weight, *bias;
  int64_t rows, m, k;
  Precision precision;
  const Bf16* weight_bf16;  // weight as bfloat16 (weight null)
};

// ---- nn ------------------------------------------------------------------------------------------------------------

// kGelu: the erf form (BERT's "gelu"); kGeluTanh: the tanh approximation (GPT-2's "gelu_new"); kSilu: x σ(x).
enum class Activation { kGelu, kRelu, kTanh, kGeluTanh, kSilu };

struct Unary {  // out = f(x)
  Activation op;
  float* out;
  const float* x;
  int64_t n;
};

// grad_x = f'(x) grad_out; `saved` is x, except for tanh: the forward's output.
struct UnaryBackward {
  Activation op;
  float* grad_x;
  const float *saved, *grad_out;
  int64_t n;
};

struct LayerNorm {  // over the last axis D of x [rows, D]; mean and rstd [rows] saved for backward
  float *out, *mean, *rstd;
  const float *x, *gamma, *beta;
  int64_t rows, d;
  float eps;
};

struct LayerNormBackward {
  float *grad_x, *grad_gamma, *grad_beta;
  const float *grad_out, *x, *gamma, *mean, *rstd;
  int64_t rows, d;
};

// Llama's RMSNorm over the last axis D of x [rows, D]: out = weight ⊙ x rstd, rstd = 1 / sqrt(mean(x²) + eps) [rows]
// saved for backward.
struct RmsNorm {
  float *out, *rstd;
  const float *x, *weight;
  int64_t rows, d;
  float eps;
};

struct RmsNormBackward {
  float *grad_x, *grad_weight;
  const float *grad_out, *x, *weight, *rstd;
  int64_t rows, d;
};

struct Swiglu {  // out = silu(gate) ⊙ up, all [n]
  float* out;
  const float *gate, *up;
  int64_t n;
};

struct SwigluBackward {
  float *grad_gate, *grad_up;
  const float *gate, *up, *grad_out;
  int64_t n;
};

// Over the last axis of x read as [batch, rows_per_batch, D]; mask (nullable) [batch, D], 0 masks.
struct Softmax {
  float* out;
  const float *x, *mask;
  int64_t batch, rows_per_batch, d;
};

struct SoftmaxBackward {  // grad_x = out ⊙ (grad_out − Σ grad_out·out) per row
  float* grad_x;
  const float *out, *grad_out;
  int64_t rows, d;
};

struct Embedding {  // out [n, D] = weight [V, D] rows at ids
  float* out;
  const float* weight;
  const int32_t* ids;  // host, checked in [0, V)
  int64_t n, d;
  const Bf16* weight_bf16;  // weight as bfloat16 (weight null): rows widened
};

struct EmbeddingBackward {  // grad_weight [V, D] = rows of grad_out [n, D] added at ids, deterministically
  float* grad_weight;
  const float* grad_out;
  const int32_t* ids;  // host, checked in [0, V)
  int64_t n, v, d;
};

struct Permute0213 {  // x [a, b, c, d] -> out [a, c, b, d]
  float* out;
  const float* x;
  int64_t a, b, c, d;
};

// loss: one float on the device, the mean over rows whose label is not ignore_index (0 if none).
struct CrossEntropy {
  float* loss;
  const float* logits;
  const int32_t* labels;  // host, checked in [0, C) or equal to ignore_index
  int64_t rows, classes;
  int32_t ignore_index;
};

struct CrossEntropyBackward {  // grad = grad_loss (softmax − onehot) / counted rows, zero rows where ignored
  float* grad_logits;
  const float* logits;
  const int32_t* labels;  // host
  int64_t rows, classes;
  int32_t ignore_index;
  float grad_loss;
};

struct MseLoss {  // loss: one float, mean((prediction − target)²), 0 for n = 0
  float* loss;
  const float *prediction, *target;
  int64_t n;
};

struct MseLossBackward {  // 2 grad_loss (prediction − target) / n
  float* grad_prediction;
  const float *prediction, *target;
  int64_t n;
  float grad_loss;
};

struct BceWithLogits {  // loss: one float, the mean over n of max(z, 0) − z·y + log(1 + exp(−|z|)), 0 for n = 0
  float* loss;
  const float *logits, *targets;
  int64_t n;
};

struct BceWithLogitsBackward {  // grad_loss (σ(z) − y) / n
  float* grad_logits;
  const float *logits, *targets;
  int64_t n;
  float grad_loss;
};

// out [batch, heads, seq, d]: each (token, head) row of x with its pairs (x_i, x_{i+d/2}) turned by
// positions[b, s] · base^(−2i/d) radians, as transformers' rotary embeddings (rotate_half); inverse turns them back,
// which is the gradient. d even.
struct Rotary {
  float* out;
  const float* x;
  const int32_t* positions;  // host [batch, seq]
  int64_t batch, heads, seq, d;
  float base;
  bool inverse;
};

struct Dropout {  // out = x ⊙ keep / (1 − p), keep drawn from (seed, index) alone
  float* out;
  const float* x;
  int64_t n;
  float p;
  uint64_t seed;
};

// ---- adapters (formulas in native/cpu/dora.h) ------------------------------------------------------------------

struct AdapterDims {
  int64_t n, k, m, r;
};

// What a backward writes; a null pointer skips that gradient and every product only it needs.
struct AdapterGrads {
  float* input = nullptr;      // [N,K]
  float* lora_a = nullptr;     // [R,K]
  float* lora_b = nullptr;     // [M,R]
  float* magnitude = nullptr;  // [M] (DoRA only)
  float* bias = nullptr;       // [M]
};

// Dropout on the low-rank branch's input: p = 0 for none. Each backend draws the mask from (seed, index).
struct BranchDropout {
  float p;
  uint64_t seed;
};

// Fused scaled-dot-product attention (FlashAttention-2's schedule: online softmax over key blocks, no query × key
// buffer). query [batch, heads, Lq, D]; key, value [batch, kv_heads, Lk, D], heads a multiple of kv_heads, query head
// h reading kv head h / (heads / kv_heads). key_mask (nullable) [batch, Lk], 0 masks a key; causal: query i sees keys
// j <= i + Lk − Lq. A query that sees no key gets a zero output. Dropout on the probabilities keeps what the dropout
// op would keep at the flat [batch, heads, Lq, Lk] index (../cuda/random_math.cuh). reference: the CPU runs its plain
// scalar loops (the tests' check of the blocked kernel); CUDA has one kernel and ignores it.
struct AttentionDims {
  int64_t batch, heads, kv_heads, query_length, key_length, head_size;
  float scale;
  bool causal, reference;
  BranchDropout dropout;
};

// out [batch, heads, Lq, D]; logsumexp [batch, heads, Lq] of the scaled, masked scores (−inf where a query sees no
// key), saved for the backward.
struct Attention {
  float *out, *logsumexp;
  const float *query, *key, *value, *key_mask;
  AttentionDims dims;
};

// Gradients of query, key and value (key's and value's summed over the query heads that share them), recomputing
// the probabilities block by block from the saved logsumexp.
struct AttentionBackward {
  float *grad_query, *grad_key, *grad_value;
  const float *grad_out, *query, *key, *value, *key_mask, *out, *logsumexp;
  AttentionDims dims;
};

struct RowSqNorms {  // out [m] = ||weight_j||² for every row of weight [m, k], in double
  float* out;
  const float* weight;
  int64_t m, k;
  const Bf16* weight_bf16;
};

// The operands of one adapted layer as every adapter op reads them; null where an op has none (input for the norm,
// bias and magnitude when absent). weight_sq_norms: ||W0_j||² [M] (RowSqNorms), cached by the caller.
struct AdapterLayer {
  const float *input, *weight, *weight_sq_norms, *bias, *lora_a, *lora_b, *magnitude;
  AdapterDims dims;
  float scale, eps;
  BranchDropout dropout;
  Precision precision;
  const Bf16* weight_bf16;  // W0 as bfloat16 (weight null)
};

// What DoRA's forward keeps for its backward: u = x W0ᵀ + s h Bᵀ [N,M], h = x_d Aᵀ [N,R], n [M], W0 Aᵀ [M,R] and
// A Aᵀ [R,R]. The backward overwrites `combined` and only reads the rest.
struct DoraSaved {
  float *combined, *hidden, *norm, *weight_lora_a, *lora_gram;
};

struct DoraNorm {  // norm [M] = max(||W0 + s B A||_row, eps) from the factored form
  float* norm;
  AdapterLayer layer;
};

struct DoraForward {  // computes the norm too
  float* output;
  DoraSaved saved;
  AdapterLayer layer;
};

struct DoraBackward {  // detach_norm: n is a constant (PEFT) or differentiated through
  AdapterGrads grads;
  const float* grad_output;
  DoraSaved saved;
  AdapterLayer layer;
  bool detach_norm;
};

struct LoraForward {  // hidden [N,R] receives h = x_d Aᵀ (saved for backward)
  float *output, *hidden;
  AdapterLayer layer;
};

struct LoraBackward {
  AdapterGrads grads;
  const float *grad_output, *hidden;
  AdapterLayer layer;
};

// merged [M,K] = (m / n) ⊙ (W0 + s B A) with a magnitude (DoRA; n computed here), W0 + s B A without (LoRA).
struct AdapterMerge {  // a bfloat16 W0 merges into bfloat16 (merged_bf16, rounded to nearest even; merged null)
  float* merged;
  AdapterLayer layer;
  Bf16* merged_bf16;
};

// weight [M,K] = merged ⊙ (n / m) − s B A (DoRA, norm from before merging), merged − s B A (LoRA: magnitude and norm
// null). layer.weight is the merged weight.
struct AdapterUnmerge {  // a bfloat16 merged weight unmerges into bfloat16 (weight_bf16; weight null)
  float* weight;
  const float* norm;
  AdapterLayer layer;
  Bf16* weight_bf16;
};

// The plain double-precision references (form V = W0 + s B A); magnitude null = LoRA.
struct AdapterForwardReference {
  float* output;
  AdapterLayer layer;
};

struct AdapterBackwardReference {
  AdapterGrads grads;
  const float* grad_output;
  AdapterLayer layer;
  bool detach_norm;
};

// BiDoRA's F = ||D Dᵀ − I||_F (*value, host) and dF/dA [R,K], dF/dB [M,R] (each nullable), see
// native/cpu/regularizer.h.
struct OrthogonalityPenalty {
  double* value;
  float *grad_lora_a, *grad_lora_b;
  const float *weight, *weight_gram, *lora_a, *lora_b;
  int64_t m, k, r;
  float scale, eps;
  const Bf16* weight_bf16;  // W0 as bfloat16 (weight null)
};

// ---- optimizers and lists (host arrays of `count` device pointers and their lengths) -----------------------------

// PyTorch's AdamW (native/common/optim_math.h), every params[i] with its moments, in place; step counts from 1.
struct AdamwStep {
  float *const *params, *const *exp_avgs, *const *exp_avg_sqs;
  const float* const* grads;
  const int64_t* lengths;
  int64_t count;
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step;
};

// PyTorch's SGD with dampening 0; momentum_buffers null: plain SGD (momentum 0).
struct SgdStep {
  float *const *params, *const *momentum_buffers;
  const float* const* grads;
  const int64_t* lengths;
  int64_t count;
  double lr, momentum, weight_decay;
  bool nesterov;
};

struct AxpyList {  // ys[i] += alpha xs[i]
  float* const* ys;
  const float* const* xs;
  const int64_t* lengths;
  int64_t count;
  float alpha;
};

struct ScaleList {  // tensors[i] *= factor
  float* const* tensors;
  const int64_t* lengths;
  int64_t count;
  float factor;
};

// direct[i] −= factor (plus[i] − minus[i]): BiDoRA's g − ξ (g⁺ − g⁻) / (2ε) with factor = ξ / (2ε).
struct CombineHypergradient {
  float* const* direct;
  const float *const *plus, *const *minus;
  const int64_t* lengths;
  int64_t count;
  float factor;
};

// ---- the table -----------------------------------------------------------------------------------------------------

template <typename Args>
using Op = void (*)(const Args&);

// One backend: device memory (null on the CPU, whose tensors own host buffers) and one entry per op, null where the
// backend has no kernel for it (the binding then refuses the op's tensors on that device). Errors are thrown as
// bidora::TypeError / RangeError (../core/errors.h) or std::exception; the binding turns them into JavaScript errors.
struct Backend {
  const char* name;

  int (*usable_device_count)();  // GPUs this process can run the kernels on
  float* (*allocate)(int64_t count, const char* function);
  void (*release)(float* pointer);
  int64_t (*release_cached)();  // frees the allocator's cached blocks, returns their bytes (null: nothing cached)
  void (*copy_to_device)(float* device, const float* host, int64_t count, const char* function);
  void (*copy_to_host)(float* host, const float* device, int64_t count, const char* function);
  void (*copy_on_device)(float* destination, const float* source, int64_t count, const char* function);

  Op<Fill> fill;
  Op<Binary> binary;
  Op<Scale> scale;
  Op<Axpy> axpy;
  Op<AxisCopy> sum_axis;
  Op<AxisCopy> broadcast_axis;
  Op<Narrow> narrow;
  Op<Narrow> narrow_backward;
  Op<GlobalNorm> global_norm;

  Op<Matmul> matmul;
  Op<Linear> linear;

  Op<Unary> unary;
  Op<UnaryBackward> unary_backward;
  Op<LayerNorm> layer_norm;
  Op<LayerNormBackward> layer_norm_backward;
  Op<RmsNorm> rms_norm;
  Op<RmsNormBackward> rms_norm_backward;
  Op<Swiglu> swiglu;
  Op<SwigluBackward> swiglu_backward;
  Op<Softmax> softmax;
  Op<SoftmaxBackward> softmax_backward;
  Op<Embedding> embedding;
  Op<EmbeddingBackward> embedding_backward;
  Op<Permute0213> permute0213;
  Op<CrossEntropy> cross_entropy;
  Op<CrossEntropyBackward> cross_entropy_backward;
  Op<MseLoss> mse_loss;
  Op<MseLossBackward> mse_loss_backward;
  Op<BceWithLogits> bce_with_logits;
  Op<BceWithLogitsBackward> bce_with_logits_backward;
  Op<Rotary> rotary;
  Op<Dropout> dropout;
  Op<Attention> attention;
  Op<AttentionBackward> attention_backward;

  Op<RowSqNorms> row_sq_norms;
  Op<DoraNorm> dora_norm;
  Op<DoraForward> dora_forward;
  Op<DoraBackward> dora_backward;
  Op<LoraForward> lora_forward;
  Op<LoraBackward> lora_backward;
  Op<AdapterMerge> adapter_merge;
  Op<AdapterUnmerge> adapter_unmerge;
  Op<AdapterForwardReference> adapter_forward_reference;
  Op<AdapterBackwardReference> adapter_backward_reference;
  Op<OrthogonalityPenalty> orthogonality_penalty;

  Op<AdamwStep> adamw_step;
  Op<SgdStep> sgd_step;
  Op<AxpyList> axpy_list;
  Op<ScaleList> scale_list;
  Op<CombineHypergradient> combine_hypergradient;
};

}  // namespace bidora::ops
