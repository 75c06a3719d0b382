// The CPU backend of the op contract: each entry unpacks its argument struct onto the kernels of this folder. Shapes
// are checked by the binding; entries only prepare what the kernels take (dropout masks, scratch, GEMM strides).
#include "backend.h"

#include <algorithm>
#include <cmath>

#include "../core/memory.h"
#include "attention.h"
#include "dora.h"
#include "elementwise.h"
#include "gemm.h"
#include "narrow.h"
#include "nn.h"
#include "optim.h"
#include "random.h"
#include "regularizer.h"

namespace bidora::cpu {

namespace {

// ---- creation and elementwise ----

void fill(const ops::Fill& args) {
  if (args.distribution == ops::Distribution::kNormal) {
    fill_normal(args.out, args.n, args.seed, args.a, args.b);
  } else {
    fill_uniform(args.out, args.n, args.seed, args.a, args.b);
  }
}

void binary(const ops::Binary& args) {
  if (args.n == 0) return;
  switch (args.op) {
    case ops::BinaryOp::kAdd:
      return add(args.out, args.a, args.b, args.n, args.period);
    case ops::BinaryOp::kSub:
      return sub(args.out, args.a, args.b, args.n, args.period);
    case ops::BinaryOp::kMul:
      return mul(args.out, args.a, args.b, args.n, args.period);
  }
}

void scale_op(const ops::Scale& args) { scale(args.out, args.a, args.alpha, args.n); }
void axpy_op(const ops::Axpy& args) { axpy(args.y, args.alpha, args.x, args.n); }
void sum_axis_op(const ops::AxisCopy& args) { sum_axis(args.out, args.a, args.outer, args.axis, args.inner); }
void broadcast_axis_op(const ops::AxisCopy& args) {
  broadcast_axis(args.out, args.a, args.outer, args.axis, args.inner);
}
void narrow_op(const ops::Narrow& args) {
  narrow(args.out, args.a, args.outer, args.axis, args.inner, args.start, args.length);
}
void narrow_backward_op(const ops::Narrow& args) {
  narrow_backward(args.out, args.a, args.outer, args.axis, args.inner, args.start, args.length);
}
void global_norm(const ops::GlobalNorm& args) {
  *args.norm = std::sqrt(sum_of_squares(args.tensors, args.lengths, args.count));
}

// ---- linear algebra ----

void matmul(const ops::Matmul& args) {
  const int64_t m = args.m, n = args.n, k = args.k;
  const int64_t a_cols = args.transpose_a ? m : k;  // a stored [m, k] or [k, m]
  const int64_t b_cols = args.transpose_b ? k : n;  // b stored [k, n] or [n, k]
  GemmOperands operands{};
  operands.c_row_stride = n;
  operands.c_col_stride = 1;
  operands.a_row_stride = args.transpose_a ? 1 : a_cols;
  operands.a_col_stride = args.transpose_a ? a_cols : 1;
  operands.b_row_stride = args.transpose_b ? 1 : b_cols;
  operands.b_col_stride = args.transpose_b ? b_cols : 1;
  operands.k = k;
  operands.alpha = 1.0f;
  operands.beta = 0.0f;
  operands.b = args.b;
  operands.b_bf16 = args.b_bf16;
  if (args.shared_b && !args.transpose_a) {
    // Every batch multiplies the same b: one GEMM over all rows is faster than `batch` small ones.
    operands.c = args.out;
    operands.a = args.a;
    operands.m = args.batch * m;
    operands.n = n;
    gemm(operands);
    return;
  }
  operands.m = m;
  operands.n = n;
  for (int64_t index = 0; index < args.batch; ++index) {
    operands.c = args.out + index * m * n;
    operands.a = args.a + index * m * k;
    const int64_t b_offset = args.shared_b ? 0 : index * k * n;
    if (args.b != nullptr) operands.b = args.b + b_offset;
    if (args.b_bf16 != nullptr) operands.b_bf16 = args.b_bf16 + b_offset;
    gemm(operands);
  }
}

void linear(const ops::Linear& args) {
  const int64_t rows = args.rows, m = args.m, k = args.k;
  GemmOperands operands{};
  operands.c = args.out;
  operands.c_row_stride = m;
  operands.c_col_stride = 1;
  operands.a = args.input;
  operands.a_row_stride = k;
  operands.a_col_stride = 1;
  operands.b = args.weight;
  operands.b_bf16 = args.weight_bf16;
  operands.b_row_stride = 1;  // B(k, j) = weight[j, k]
  operands.b_col_stride = k;
  operands.m = rows;
  operands.n = m;
  operands.k = k;
  operands.alpha = 1.0f;
  operands.beta = 0.0f;
  operands.bias = args.bias;
  gemm(operands);
}

// ---- nn ----

void unary(const ops::Unary& args) {
  if (args.n == 0) return;
  switch (args.op) {
    case ops::Activation::kGelu:
      return gelu_forward(args.out, args.x, args.n);
    case ops::Activation::kRelu:
      return relu_forward(args.out, args.x, args.n);
    case ops::Activation::kTanh:
      return tanh_forward(args.out, args.x, args.n);
    case ops::Activation::kGeluTanh:
      return gelu_tanh_forward(args.out, args.x, args.n);
    case ops::Activation::kSilu:
      return silu_forward(args.out, args.x, args.n);
  }
}

void unary_backward(const ops::UnaryBackward& args) {
  if (args.n == 0) return;
  switch (args.op) {
    case ops::Activation::kGelu:
      return gelu_backward(args.grad_x, args.saved, args.grad_out, args.n);
    case ops::Activation::kRelu:
      return relu_backward(args.grad_x, args.saved, args.grad_out, args.n);
    case ops::Activation::kTanh:
      return tanh_backward(args.grad_x, args.saved, args.grad_out, args.n);
    case ops::Activation::kGeluTanh:
      return gelu_tanh_backward(args.grad_x, args.saved, args.grad_out, args.n);
    case ops::Activation::kSilu:
      return silu_backward(args.grad_x, args.saved, args.grad_out, args.n);
  }
}

void swiglu(const ops::Swiglu& args) { swiglu_forward(args.out, args.gate, args.up, args.n); }

void swiglu_backward_op(const ops::SwigluBackward& args) {
  swiglu_backward(args.grad_gate, args.grad_up, args.gate, args.up, args.grad_out, args.n);
}

void rms_norm(const ops::RmsNorm& args) {
  rms_norm_forward(args.out, args.rstd, args.x, args.weight, args.eps, args.rows, args.d);
}

void rms_norm_backward_op(const ops::RmsNormBackward& args) {
  rms_norm_backward(args.grad_x, args.grad_weight, args.grad_out, args.x, args.weight, args.rstd, args.rows, args.d);
}

void layer_norm(const ops::LayerNorm& args) {
  if (args.rows == 0) return;
  layer_norm_forward(args.out, args.mean, args.rstd, args.x, args.gamma, args.beta, args.eps, args.rows, args.d);
}

void layer_norm_backward_op(const ops::LayerNormBackward& args) {
  layer_norm_backward(args.grad_x, args.grad_gamma, args.grad_beta, args.grad_out, args.x, args.gamma, args.mean,
                      args.rstd, args.rows, args.d);
}

void softmax(const ops::Softmax& args) {
  if (args.batch * args.rows_per_batch * args.d == 0) return;
  softmax_forward(args.out, args.x, args.mask, args.batch, args.rows_per_batch, args.d);
}

void softmax_backward_op(const ops::SoftmaxBackward& args) {
  if (args.rows * args.d == 0) return;
  softmax_backward(args.grad_x, args.out, args.grad_out, args.rows, args.d);
}

void embedding(const ops::Embedding& args) {
  if (args.n == 0 || args.d == 0) return;
  if (args.weight_bf16 == nullptr) return embedding_forward(args.out, args.weight, args.ids, args.n, args.d);
  for (int64_t position = 0; position < args.n; ++position) {
    const Bf16* row = args.weight_bf16 + static_cast<int64_t>(args.ids[position]) * args.d;
    for (int64_t col = 0; col < args.d; ++col) args.out[position * args.d + col] = bf16_to_float(row[col]);
  }
}

void embedding_backward_op(const ops::EmbeddingBackward& args) {
  if (args.d == 0) return;
  embedding_backward(args.grad_weight, args.grad_out, args.ids, args.n, args.v, args.d);
}

void permute(const ops::Permute0213& args) {
  if (args.a * args.b * args.c * args.d == 0) return;
  permute_0213(args.out, args.x, args.a, args.b, args.c, args.d);
}

void cross_entropy(const ops::CrossEntropy& args) {
  cross_entropy_forward(args.loss, args.logits, args.labels, args.ignore_index, args.rows, args.classes);
}

void cross_entropy_backward_op(const ops::CrossEntropyBackward& args) {
  cross_entropy_backward(args.grad_logits, args.logits, args.labels, args.ignore_index, args.grad_loss, args.rows,
                         args.classes);
}

void mse_loss(const ops::MseLoss& args) { mse_loss_forward(args.loss, args.prediction, args.target, args.n); }

void bce_with_logits(const ops::BceWithLogits& args) {
  bce_with_logits_forward(args.loss, args.logits, args.targets, args.n);
}

void bce_with_logits_backward_op(const ops::BceWithLogitsBackward& args) {
  bce_with_logits_backward(args.grad_logits, args.logits, args.targets, args.grad_loss, args.n);
}

void rotary_op(const ops::Rotary& args) {
  rotary(args.out, args.x, args.positions, args.batch, args.heads, args.seq, args.d, args.base, args.inverse);
}

void mse_loss_backward_op(const ops::MseLossBackward& args) {
  if (args.n == 0) return;
  mse_loss_backward(args.grad_prediction, args.prediction, args.target, args.grad_loss, args.n);
}

void dropout_op(const ops::Dropout& args) {
  if (args.n == 0) return;
  dropout(args.out, args.x, args.n, args.p, args.seed);
}

void attention_op(const ops::Attention& args) {
  (args.dims.reference ? attention_forward_reference : attention_forward)(args);
}

void attention_backward_op(const ops::AttentionBackward& args) {
  (args.dims.reference ? attention_backward_reference : attention_backward)(args);
}

// ---- adapters ----

// The low-rank branch's input: x itself, or x after dropout in `storage`.
const float* branch_input(const float* input, int64_t count, const ops::BranchDropout& dropout_args,
                          FloatBuffer& storage) {
  if (dropout_args.p == 0) return input;
  storage = FloatBuffer(count);
  dropout(storage.data(), input, count, dropout_args.p, dropout_args.seed);
  return storage.data();
}

void apply_dropout_mask(float* values, int64_t count, const void* context) {
  const auto* dropout_args = static_cast<const ops::BranchDropout*>(context);
  dropout(values, values, count, dropout_args->p, dropout_args->seed);
}

DropoutBackward dropout_backward(const ops::BranchDropout& dropout_args) {
  return dropout_args.p > 0 ? apply_dropout_mask : nullptr;
}

void row_sq_norms_op(const ops::RowSqNorms& args) {
  row_sq_norms(args.out, {args.weight, args.weight_bf16}, args.m, args.k);
}

WeightView weight_of(const ops::AdapterLayer& layer) { return {layer.weight, layer.weight_bf16}; }

void dora_norm_op(const ops::DoraNorm& args) {
  const ops::AdapterLayer& l = args.layer;
  const auto [n, k, m, r] = l.dims;
  FloatBuffer weight_lora_a(m * r), lora_gram(r * r);
  dora_norm(args.norm, weight_lora_a.data(), lora_gram.data(), weight_of(l), l.weight_sq_norms, l.lora_a, l.lora_b,
            l.scale, l.eps, m, k, r);
}

void dora_forward_op(const ops::DoraForward& args) {
  const ops::AdapterLayer& l = args.layer;
  const ops::DoraSaved& s = args.saved;
  FloatBuffer dropped;
  const float* lora_input = branch_input(l.input, l.dims.n * l.dims.k, l.dropout, dropped);
  dora_forward(args.output, s.combined, s.hidden, s.norm, s.weight_lora_a, s.lora_gram, l.input, lora_input,
               weight_of(l), l.weight_sq_norms, l.bias, l.lora_a, l.lora_b, l.magnitude, l.scale, l.eps, l.dims);
}

void dora_backward_op(const ops::DoraBackward& args) {
  const ops::AdapterLayer& l = args.layer;
  const ops::DoraSaved& s = args.saved;
  FloatBuffer dropped;
  const float* lora_input =
      args.grads.lora_a != nullptr ? branch_input(l.input, l.dims.n * l.dims.k, l.dropout, dropped) : l.input;
  dora_backward(args.grads, s.combined, args.grad_output, lora_input, weight_of(l), l.lora_a, l.lora_b, l.magnitude,
                s.norm, s.hidden, s.weight_lora_a, s.lora_gram, l.scale, l.eps, args.detach_norm,
                dropout_backward(l.dropout), &l.dropout, l.dims);
}

void lora_forward_op(const ops::LoraForward& args) {
  const ops::AdapterLayer& l = args.layer;
  FloatBuffer dropped;
  const float* lora_input = branch_input(l.input, l.dims.n * l.dims.k, l.dropout, dropped);
  lora_forward(args.output, args.hidden, l.input, lora_input, weight_of(l), l.bias, l.lora_a, l.lora_b, l.scale,
               l.dims);
}

void lora_backward_op(const ops::LoraBackward& args) {
  const ops::AdapterLayer& l = args.layer;
  FloatBuffer dropped;
  const float* lora_input =
      args.grads.lora_a != nullptr ? branch_input(l.input, l.dims.n * l.dims.k, l.dropout, dropped) : l.input;
  lora_backward(args.grads, args.grad_output, lora_input, weight_of(l), l.lora_a, l.lora_b, args.hidden, l.scale,
                dropout_backward(l.dropout), &l.dropout, l.dims);
}

void adapter_merge_op(const ops::AdapterMerge& args) {
  const ops::AdapterLayer& l = args.layer;
  const auto [n, k, m, r] = l.dims;
  FloatBuffer norm;
  if (l.magnitude != nullptr) {
    norm = FloatBuffer(m);
    FloatBuffer weight_lora_a(m * r), lora_gram(r * r), widened;
    // A merge happens once: over a bfloat16 W0 the norm comes from its float32 widening, so that the merged weight
    // is the float32 merge rounded once (the fast products would round A to bfloat16 too).
    WeightView weight = weight_of(l);
    if (weight.bf16 != nullptr) {
      widened = FloatBuffer(m * k);
      for (int64_t index = 0; index < m * k; ++index) widened.data()[index] = bf16_to_float(weight.bf16[index]);
      weight = {widened.data(), nullptr};
    }
    dora_norm(norm.data(), weight_lora_a.data(), lora_gram.data(), weight, l.weight_sq_norms, l.lora_a, l.lora_b,
              l.scale, l.eps, m, k, r);
  }
  adapter_merge({args.merged, args.merged_bf16}, weight_of(l), l.lora_a, l.lora_b, l.magnitude, norm.data(), l.scale, m,
                k, r);
}

void adapter_unmerge_op(const ops::AdapterUnmerge& args) {
  const ops::AdapterLayer& l = args.layer;
  adapter_unmerge({args.weight, args.weight_bf16}, weight_of(l), l.lora_a, l.lora_b, l.magnitude, args.norm, l.scale,
                  l.dims.m, l.dims.k, l.dims.r);
}

void adapter_forward_reference_op(const ops::AdapterForwardReference& args) {
  const ops::AdapterLayer& l = args.layer;
  FloatBuffer dropped;
  const float* lora_input = branch_input(l.input, l.dims.n * l.dims.k, l.dropout, dropped);
  adapter_forward_reference(args.output, l.input, lora_input, weight_of(l), l.bias, l.lora_a, l.lora_b, l.magnitude,
                            l.scale, l.eps, l.dims);
}

void adapter_backward_reference_op(const ops::AdapterBackwardReference& args) {
  const ops::AdapterLayer& l = args.layer;
  const int64_t count = l.dims.n * l.dims.k;
  FloatBuffer dropped, mask;
  const float* lora_input = branch_input(l.input, count, l.dropout, dropped);
  if (l.dropout.p > 0) {
    mask = FloatBuffer(count);
    std::fill_n(mask.data(), mask.size(), 1.0f);
    dropout(mask.data(), mask.data(), mask.size(), l.dropout.p, l.dropout.seed);
  }
  adapter_backward_reference(args.grads, args.grad_output, l.input, lora_input, l.dropout.p > 0 ? mask.data() : nullptr,
                             weight_of(l), l.lora_a, l.lora_b, l.magnitude, l.scale, l.eps, args.detach_norm, l.dims);
}

void orthogonality_penalty_op(const ops::OrthogonalityPenalty& args) {
  *args.value =
      orthogonality_penalty(args.grad_lora_a, args.grad_lora_b, {args.weight, args.weight_bf16}, args.weight_gram,
                            args.lora_a, args.lora_b, args.scale, args.eps, args.m, args.k, args.r);
}

// ---- optimizers and lists ----

void adamw(const ops::AdamwStep& args) {
  const AdamwOptions options{args.lr, args.beta1, args.beta2, args.eps, args.weight_decay, args.step};
  adamw_step(args.params, args.grads, args.exp_avgs, args.exp_avg_sqs, args.lengths, args.count, options);
}

void sgd(const ops::SgdStep& args) {
  const SgdOptions options{args.lr, args.momentum, args.weight_decay, args.nesterov};
  sgd_step(args.params, args.grads, args.momentum_buffers, args.lengths, args.count, options);
}

void axpy_list_op(const ops::AxpyList& args) { axpy_list(args.ys, args.alpha, args.xs, args.lengths, args.count); }
void scale_list_op(const ops::ScaleList& args) { scale_list(args.tensors, args.factor, args.lengths, args.count); }
void combine_hypergradient_op(const ops::CombineHypergradient& args) {
  combine_hypergradient(args.direct, args.plus, args.minus, args.factor, args.lengths, args.count);
}

ops::Backend make_backend() {
  ops::Backend table{};
  table.name = "cpu";
  table.fill = fill;
  table.binary = binary;
  table.scale = scale_op;
  table.axpy = axpy_op;
  table.sum_axis = sum_axis_op;
  table.broadcast_axis = broadcast_axis_op;
  table.narrow = narrow_op;
  table.narrow_backward = narrow_backward_op;
  table.global_norm = global_norm;
  table.matmul = matmul;
  table.linear = linear;
  table.unary = unary;
  table.unary_backward = unary_backward;
  table.layer_norm = layer_norm;
  table.layer_norm_backward = layer_norm_backward_op;
  table.rms_norm = rms_norm;
  table.rms_norm_backward = rms_norm_backward_op;
  table.swiglu = swiglu;
  table.swiglu_backward = swiglu_backward_op;
  table.softmax = softmax;
  table.softmax_backward = softmax_backward_op;
  table.embedding = embedding;
  table.embedding_backward = embedding_backward_op;
  table.permute0213 = permute;
  table.cross_entropy = cross_entropy;
  table.cross_entropy_backward = cross_entropy_backward_op;
  table.mse_loss = mse_loss;
  table.mse_loss_backward = mse_loss_backward_op;
  table.bce_with_logits = bce_with_logits;
  table.bce_with_logits_backward = bce_with_logits_backward_op;
  table.rotary = rotary_op;
  table.dropout = dropout_op;
  table.attention = attention_op;
  table.attention_backward = attention_backward_op;
  table.row_sq_norms = row_sq_norms_op;
  table.dora_norm = dora_norm_op;
  table.dora_forward = dora_forward_op;
  table.dora_backward = dora_backward_op;
  table.lora_forward = lora_forward_op;
  table.lora_backward = lora_backward_op;
  table.adapter_merge = adapter_merge_op;
  table.adapter_unmerge = adapter_unmerge_op;
  table.adapter_forward_reference = adapter_forward_reference_op;
  table.adapter_backward_reference = adapter_backward_reference_op;
  table.orthogonality_penalty = orthogonality_penalty_op;
  table.adamw_step = adamw;
  table.sgd_step = sgd;
  table.axpy_list = axpy_list_op;
  table.scale_list = scale_list_op;
  table.combine_hypergradient = combine_hypergradient_op;
  return table;
}

}  // namespace

const ops::Backend& backend() {
  static const ops::Backend table = make_backend();
  return table;
}

}  // namespace bidora::cpu
