// The CUDA backend of the op contract: each entry unpacks its argument struct onto the launchers of cuda_ops.h, with
// the device scratch, dropout masks and id uploads they need, and checks the launch. Same contracts as the CPU
// backend (native/cpu/backend.cc): the binding cannot tell them apart but by the device of the tensors.
#include <string>
#include <vector>

#include "../core/errors.h"
#include "backend.h"
#include "cuda_ops.h"

namespace bidora::cuda {

namespace {

// A device copy of checked ids or labels, in scratch `slot` (valid until the next use of that slot).
const int32_t* device_ints(int slot, const int32_t* host, int64_t count, const char* fn) {
  auto* device = static_cast<int32_t*>(scratch(slot, static_cast<size_t>(count) * sizeof(int32_t), fn));
  copy_ints_to_device(device, host, count, fn);
  return device;
}

// ---- elementwise ----

void binary(const ops::Binary& args) {
  switch (args.op) {
    case ops::BinaryOp::kAdd:
      add(args.out, args.a, args.b, args.n, args.period, nullptr);
      break;
    case ops::BinaryOp::kSub:
      sub(args.out, args.a, args.b, args.n, args.period, nullptr);
      break;
    case ops::BinaryOp::kMul:
      mul(args.out, args.a, args.b, args.n, args.period, nullptr);
      break;
  }
  check_launch("binary op");
}

void scale_op(const ops::Scale& args) {
  scale(args.out, args.a, args.alpha, args.n, nullptr);
  check_launch("scale");
}

void axpy_op(const ops::Axpy& args) {
  axpy(args.y, args.alpha, args.x, args.n, nullptr);
  check_launch("axpy");
}

void sum_axis_op(const ops::AxisCopy& args) {
  sum_axis(args.out, args.a, args.outer, args.axis, args.inner, nullptr);
  check_launch("sum");
}

void broadcast_axis_op(const ops::AxisCopy& args) {
  broadcast_axis(args.out, args.a, args.outer, args.axis, args.inner, nullptr);
  check_launch("broadcastAxis");
}

void narrow_op(const ops::Narrow& args) {
  narrow(args.out, args.a, args.outer, args.axis, args.inner, args.start, args.length, nullptr);
  check_launch("narrow");
}

void narrow_backward_op(const ops::Narrow& args) {
  narrow_backward(args.out, args.a, args.outer, args.axis, args.inner, args.start, args.length, nullptr);
  check_launch("narrowBackward");
}

void global_norm(const ops::GlobalNorm& args) {
  const char* fn = "globalNorm";
  if (args.count == 0) {
    *args.norm = 0;
    return;
  }
  const int count = static_cast<int>(args.count);
  auto* partials =
      static_cast<double*>(scratch(0, static_cast<size_t>(count) * kNormPartialsPerTensor * sizeof(double), fn));
  auto* norm = static_cast<float*>(scratch(1, sizeof(float), fn));
  list_global_norm(norm, partials, args.tensors, args.lengths, count, nullptr);
  check_launch(fn);
  float result = 0;
  copy_to_host(&result, norm, 1, fn);
  *args.norm = result;
}

// ---- linear algebra ----

void matmul(const ops::Matmul& args) {
  const int64_t m = args.m, n = args.n, k = args.k;
  for (int64_t index = 0; index < args.batch; ++index) {
    const int64_t b_offset = args.shared_b ? 0 : index * k * n;
    const WeightView b =
        args.b_bf16 != nullptr ? WeightView{nullptr, args.b_bf16 + b_offset} : WeightView{args.b + b_offset, nullptr};
    gemm(args.out + index * m * n, float32(args.a + index * m * k), args.transpose_a, b, args.transpose_b, m, n, k,
         1.0f, 0.0f, args.precision, {}, nullptr);
  }
  check_launch("matmul");
}

void linear(const ops::Linear& args) {
  gemm(args.out, float32(args.input), false, {args.weight, args.weight_bf16}, true, args.rows, args.m, args.k, 1.0f,
       0.0f, args.precision, {}, nullptr);
  if (args.bias != nullptr) add(args.out, args.out, args.bias, args.rows * args.m, args.m, nullptr);
  check_launch("linear");
}

// ---- nn ----

void unary(const ops::Unary& args) {
  if (args.n == 0) return;
  switch (args.op) {
    case ops::Activation::kGelu:
      gelu_forward(args.out, args.x, args.n, nullptr);
      break;
    case ops::Activation::kRelu:
      relu_forward(args.out, args.x, args.n, nullptr);
      break;
    case ops::Activation::kTanh:
      tanh_forward(args.out, args.x, args.n, nullptr);
      break;
    case ops::Activation::kGeluTanh:
      gelu_tanh_forward(args.out, args.x, args.n, nullptr);
      break;
    case ops::Activation::kSilu:
      silu_forward(args.out, args.x, args.n, nullptr);
      break;
  }
  check_launch("activation");
}

void unary_backward(const ops::UnaryBackward& args) {
  if (args.n == 0) return;
  switch (args.op) {
    case ops::Activation::kGelu:
      gelu_backward(args.grad_x, args.saved, args.grad_out, args.n, nullptr);
      break;
    case ops::Activation::kRelu:
      relu_backward(args.grad_x, args.saved, args.grad_out, args.n, nullptr);
      break;
    case ops::Activation::kTanh:
      tanh_backward(args.grad_x, args.saved, args.grad_out, args.n, nullptr);
      break;
    case ops::Activation::kGeluTanh:
      gelu_tanh_backward(args.grad_x, args.saved, args.grad_out, args.n, nullptr);
      break;
    case ops::Activation::kSilu:
      silu_backward(args.grad_x, args.saved, args.grad_out, args.n, nullptr);
      break;
  }
  check_launch("activation backward");
}

void layer_norm(const ops::LayerNorm& args) {
  if (args.rows == 0) return;
  layer_norm_forward(args.out, args.mean, args.rstd, args.x, args.gamma, args.beta, args.eps, args.rows, args.d,
                     nullptr);
  check_launch("layerNorm");
}

void layer_norm_backward_op(const ops::LayerNormBackward& args) {
  // Writes grad_gamma and grad_beta (zeros) even when rows is 0; d is at least 1 here.
  layer_norm_backward(args.grad_x, args.grad_gamma, args.grad_beta, args.grad_out, args.x, args.gamma, args.mean,
                      args.rstd, args.rows, args.d, nullptr);
  check_launch("layerNormBackward");
}

void rms_norm(const ops::RmsNorm& args) {
  if (args.rows == 0) return;
  rms_norm_forward(args.out, args.rstd, args.x, args.weight, args.eps, args.rows, args.d, nullptr);
  check_launch("rmsNorm");
}

void rms_norm_backward_op(const ops::RmsNormBackward& args) {
  // Writes grad_weight (zeros) even when rows is 0; d is at least 1 here.
  rms_norm_backward(args.grad_x, args.grad_weight, args.grad_out, args.x, args.weight, args.rstd, args.rows, args.d,
                    nullptr);
  check_launch("rmsNormBackward");
}

void swiglu(const ops::Swiglu& args) {
  if (args.n == 0) return;
  swiglu_forward(args.out, args.gate, args.up, args.n, nullptr);
  check_launch("swiglu");
}

void swiglu_backward_op(const ops::SwigluBackward& args) {
  if (args.n == 0) return;
  swiglu_backward(args.grad_gate, args.grad_up, args.gate, args.up, args.grad_out, args.n, nullptr);
  check_launch("swigluBackward");
}

void softmax(const ops::Softmax& args) {
  if (args.batch * args.rows_per_batch * args.d == 0) return;
  softmax_forward(args.out, args.x, args.mask, args.batch, args.rows_per_batch, args.d, nullptr);
  check_launch("softmax");
}

void softmax_backward_op(const ops::SoftmaxBackward& args) {
  if (args.rows * args.d == 0) return;
  softmax_backward(args.grad_x, args.out, args.grad_out, args.rows, args.d, nullptr);
  check_launch("softmaxBackward");
}

void embedding(const ops::Embedding& args) {
  const char* fn = "embedding";
  if (args.n == 0 || args.d == 0) return;
  embedding_forward(args.out, {args.weight, args.weight_bf16}, device_ints(0, args.ids, args.n, fn), args.n, args.d,
                    nullptr);
  check_launch(fn);
}

void embedding_backward_op(const ops::EmbeddingBackward& args) {
  const char* fn = "embeddingBackward";
  if (args.d == 0) return;
  // The plan holds positions and counts as int32.
  constexpr int64_t kMaxInt32 = 2147483647;
  if (args.n > kMaxInt32) {
    throw RangeError(std::string(fn) + ": on 'cuda' ids may hold at most " + std::to_string(kMaxInt32) +
                     " entries, but has " + std::to_string(args.n));
  }
  // The stable counting sort runs here, where the ids are; the kernel sums each row's positions in that order.
  std::vector<int32_t> order(static_cast<size_t>(args.n)), row_start(static_cast<size_t>(args.v) + 1);
  embedding_backward_plan(order.data(), row_start.data(), args.ids, args.n, args.v);
  const int32_t* device_order = device_ints(0, order.data(), args.n, fn);
  const int32_t* device_row_start = device_ints(1, row_start.data(), args.v + 1, fn);
  embedding_backward(args.grad_weight, args.grad_out, device_order, device_row_start, args.v, args.d, nullptr);
  check_launch(fn);
}

void permute(const ops::Permute0213& args) {
  if (args.a * args.b * args.c * args.d == 0) return;
  permute_0213(args.out, args.x, args.a, args.b, args.c, args.d, nullptr);
  check_launch("permute0213");
}

void cross_entropy(const ops::CrossEntropy& args) {
  const char* fn = "crossEntropy";
  // Writes the loss (0 for no rows) into the rank-0 device tensor, as the CPU kernel does on the host.
  const int32_t* labels = device_ints(0, args.labels, args.rows, fn);
  auto* row_losses = static_cast<float*>(scratch(1, static_cast<size_t>(args.rows) * sizeof(float), fn));
  cross_entropy_forward(args.loss, row_losses, args.logits, labels, args.ignore_index, args.rows, args.classes,
                        nullptr);
  check_launch(fn);
}

void cross_entropy_backward_op(const ops::CrossEntropyBackward& args) {
  const char* fn = "crossEntropyBackward";
  const int32_t* labels = device_ints(0, args.labels, args.rows, fn);
  auto* row_scale = static_cast<float*>(scratch(1, sizeof(float), fn));
  cross_entropy_backward(args.grad_logits, row_scale, args.logits, labels, args.ignore_index, args.grad_loss, args.rows,
                         args.classes, nullptr);
  check_launch(fn);
}

void mse_loss(const ops::MseLoss& args) {
  mse_loss_forward(args.loss, args.prediction, args.target, args.n, nullptr);
  check_launch("mseLoss");
}

void bce_with_logits(const ops::BceWithLogits& args) {
  bce_with_logits_forward(args.loss, args.logits, args.targets, args.n, nullptr);
  check_launch("bceWithLogits");
}

void bce_with_logits_backward_op(const ops::BceWithLogitsBackward& args) {
  bce_with_logits_backward(args.grad_logits, args.logits, args.targets, args.grad_loss, args.n, nullptr);
  check_launch("bceWithLogitsBackward");
}

void rotary_op(const ops::Rotary& args) {
  const char* fn = "rotary";
  rotary(args.out, args.x, device_ints(0, args.positions, args.batch * args.seq, fn), args.batch, args.heads, args.seq,
         args.d, args.base, args.inverse, nullptr);
  check_launch(fn);
}

void attention_op(const ops::Attention& args) {
  attention_forward(args, nullptr);
  check_launch("attention");
}

void attention_backward_op(const ops::AttentionBackward& args) {
  const char* fn = "attentionBackward";
  const ops::AttentionDims& d = args.dims;
  const size_t rows = static_cast<size_t>(d.batch * d.heads * d.query_length);
  attention_backward(args, static_cast<float*>(scratch(0, rows * sizeof(float), fn)), nullptr);
  check_launch(fn);
}

void mse_loss_backward_op(const ops::MseLossBackward& args) {
  mse_loss_backward(args.grad_prediction, args.prediction, args.target, args.grad_loss, args.n, nullptr);
  check_launch("mseLossBackward");
}

void dropout_op(const ops::Dropout& args) {
  dropout(args.out, args.x, args.n, args.p, args.seed, nullptr);
  check_launch("dropout");
}

// ---- adapters ----

// Dropout on the low-rank branch with the CPU's mask: the same (seed, index) keeps the same elements on either
// device. The scale (keep / (1 − p)) and the dropped input live in scratch until the next adapter call.
struct Branch {
  const float* scale = nullptr;  // null without dropout
  const float* input = nullptr;  // x itself without dropout
};

Branch branch(const float* input, int64_t count, const ops::BranchDropout& dropout_args, const char* fn) {
  if (dropout_args.p == 0) return {nullptr, input};
  auto* scale = static_cast<float*>(scratch(2, static_cast<size_t>(count) * sizeof(float), fn));
  dropout(scale, nullptr, count, dropout_args.p, dropout_args.seed, nullptr);
  auto* dropped = static_cast<float*>(scratch(3, static_cast<size_t>(count) * sizeof(float), fn));
  // Dropped from x directly, not x ⊙ scale: a dropped inf or NaN is 0, as on the CPU.
  dropout(dropped, input, count, dropout_args.p, dropout_args.seed, nullptr);
  return {scale, dropped};
}

void* workspace(const ops::AdapterDims& dims, const char* fn) { return scratch(1, adapter_workspace_bytes(dims), fn); }

void row_sq_norms_op(const ops::RowSqNorms& args) {
  row_sq_norms(args.out, {args.weight, args.weight_bf16}, args.m, args.k, nullptr);
  check_launch("row norms");
}

void dora_norm_op(const ops::DoraNorm& args) {
  const char* fn = "doraWeightNorm";
  const ops::AdapterLayer& l = args.layer;
  const int64_t m = l.dims.m, r = l.dims.r;
  auto* factors = static_cast<float*>(scratch(2, static_cast<size_t>(m * r + r * r) * sizeof(float), fn));
  dora_norm(args.norm, factors, factors + m * r, WeightView{l.weight, l.weight_bf16}, l.weight_sq_norms, l.lora_a,
            l.lora_b, l.scale, l.eps, l.dims, workspace(l.dims, fn), nullptr);
  check_launch(fn);
}

void dora_forward_op(const ops::DoraForward& args) {
  const char* fn = "doraForward";
  const ops::AdapterLayer& l = args.layer;
  const ops::DoraSaved& s = args.saved;
  const Branch lora = branch(l.input, l.dims.n * l.dims.k, l.dropout, fn);
  dora_forward(args.output, s.combined, s.hidden, s.norm, s.weight_lora_a, s.lora_gram, l.input, lora.input,
               WeightView{l.weight, l.weight_bf16}, l.weight_sq_norms, l.bias, l.lora_a, l.lora_b, l.magnitude, l.scale,
               l.eps, l.dims, l.precision, workspace(l.dims, fn), nullptr);
  check_launch(fn);
}

void dora_backward_op(const ops::DoraBackward& args) {
  const char* fn = "doraBackward";
  const ops::AdapterLayer& l = args.layer;
  const ops::DoraSaved& s = args.saved;
  const Branch lora = branch(l.input, l.dims.n * l.dims.k, l.dropout, fn);
  dora_backward(args.grads, s.combined, args.grad_output, lora.input, lora.scale, WeightView{l.weight, l.weight_bf16},
                l.lora_a, l.lora_b, l.magnitude, s.norm, s.hidden, s.weight_lora_a, s.lora_gram, l.scale, l.eps,
                args.detach_norm, l.dims, l.precision, workspace(l.dims, fn), nullptr);
  check_launch(fn);
}

void lora_forward_op(const ops::LoraForward& args) {
  const char* fn = "loraForward";
  const ops::AdapterLayer& l = args.layer;
  const Branch lora = branch(l.input, l.dims.n * l.dims.k, l.dropout, fn);
  lora_forward(args.output, args.hidden, l.input, lora.input, WeightView{l.weight, l.weight_bf16}, l.bias, l.lora_a,
               l.lora_b, l.scale, l.dims, l.precision, workspace(l.dims, fn), nullptr);
  check_launch(fn);
}

void lora_backward_op(const ops::LoraBackward& args) {
  const char* fn = "loraBackward";
  const ops::AdapterLayer& l = args.layer;
  const Branch lora = branch(l.input, l.dims.n * l.dims.k, l.dropout, fn);
  lora_backward(args.grads, args.grad_output, lora.input, lora.scale, WeightView{l.weight, l.weight_bf16}, l.lora_a,
                l.lora_b, args.hidden, l.scale, l.dims, l.precision, workspace(l.dims, fn), nullptr);
  check_launch(fn);
}

// ---- optimizers and lists ----

void adamw(const ops::AdamwStep& args) {
  adamw_step(args.params, args.exp_avgs, args.exp_avg_sqs, args.grads, args.lengths, static_cast<int>(args.count),
             adamw_scalars(args.lr, args.beta1, args.beta2, args.eps, args.weight_decay, args.step), nullptr);
  check_launch("adamwStep");
}

void sgd(const ops::SgdStep& args) {
  const SgdScalars scalars{static_cast<float>(args.lr), static_cast<float>(args.momentum),
                           static_cast<float>(args.weight_decay), args.nesterov};
  sgd_step(args.params, args.momentum_buffers, args.grads, args.lengths, static_cast<int>(args.count), scalars,
           nullptr);
  check_launch("sgdStep");
}

void axpy_list(const ops::AxpyList& args) {
  list_axpy(args.ys, args.xs, args.lengths, static_cast<int>(args.count), args.alpha, nullptr, nullptr);
  check_launch("axpyList");
}

void scale_list(const ops::ScaleList& args) {
  // One elementwise launch per tensor: there is no list launcher for it.
  for (int64_t index = 0; index < args.count; ++index) {
    scale(args.tensors[index], args.tensors[index], args.factor, args.lengths[index], nullptr);
  }
  check_launch("scaleList");
}

void combine_hypergradient_op(const ops::CombineHypergradient& args) {
  combine_hypergradient(args.direct, args.plus, args.minus, args.factor, args.lengths, static_cast<int>(args.count),
                        nullptr);
  check_launch("combineHypergradient");
}

ops::Backend make_backend() {
  ops::Backend table{};
  table.name = "cuda";
  table.usable_device_count = usable_device_count;
  table.allocate = allocate_floats;
  table.release = free_floats;
  table.release_cached = release_cached_device_memory;
  table.copy_to_device = copy_to_device;
  table.copy_to_host = copy_to_host;
  table.copy_on_device = copy_on_device;
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
  table.attention = attention_op;
  table.attention_backward = attention_backward_op;
  table.dropout = dropout_op;
  table.row_sq_norms = row_sq_norms_op;
  table.dora_norm = dora_norm_op;
  table.dora_forward = dora_forward_op;
  table.dora_backward = dora_backward_op;
  table.lora_forward = lora_forward_op;
  table.lora_backward = lora_backward_op;
  table.adamw_step = adamw;
  table.sgd_step = sgd;
  table.axpy_list = axpy_list;
  table.scale_list = scale_list;
  table.combine_hypergradient = combine_hypergradient_op;
  return table;
}

}  // namespace

const ops::Backend& backend() {
  static const ops::Backend table = make_backend();
  return table;
}

}  // namespace bidora::cuda
