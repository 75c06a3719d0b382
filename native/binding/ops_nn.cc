// The neural-network ops and the products, declared with op.h; shapes and ids checked by ../core/shape_rules. Each
// returns fresh tensors on its tensors' device (gradients too: callers accumulate). Ids and labels are Int32Arrays,
// viewed without copying and range-checked in host memory, so kernels on either device index safely.
#include "op.h"

namespace bidora::binding {

namespace {

// Every argument an nn op takes; each op declares the ones it reads and its rule derives the rest.
struct NnArgs {
  TensorHandle *a, *b, *bias, *x, *grad_output, *gamma, *beta, *mean, *rstd, *mask, *weight, *table, *prediction,
      *target, *query, *key, *value, *key_mask, *output, *logsumexp, *gate, *up;
  IntArray positions, ids;
  bool transpose_a = false, transpose_b = false, inverse = false, causal = false, reference = false;
  float base, p, eps, grad_loss, scale;
  uint64_t seed;
  int64_t vocab_size, d;
  int32_t ignore_index;
  rules::Product product;
  rules::Rows rows;
  rules::SoftmaxRows softmax;
  ops::AttentionDims dims;
  Shape shape, scalar, rows_shape, lse_shape;  // output shapes: rank 0 for `scalar`
  float *out, *out_mean, *out_rstd, *out_logsumexp, *grad_gamma, *grad_beta, *grad_weight, *grad_key, *grad_value,
      *grad_up;
};
using N = NnArgs;

const OpSpec<N> kMatmul(
    "matmul", Runs::kAny, kernel<&ops::Backend::matmul>,
    {arg<&N::a>("a"), arg<&N::b>("b", kBf16), arg<&N::transpose_a>("transposeA"), arg<&N::transpose_b>("transposeB"),
     out<&N::out, &N::product, &rules::Product::out>()},
    [](const char* fn, N& op) {
      op.product = rules::matmul(fn, op.a->shape(), op.b->shape(), op.transpose_a, op.transpose_b);
    },
    [](const Call& call, N& op) {
      const rules::Product& p = op.product;
      const WeightView b = op.b->weight();
      call.backend.matmul({op.out, op.a->data(), b.f32, p.batch, p.m, p.n, p.k, op.transpose_a, op.transpose_b,
                           p.shared_b, gemm_precision(), b.bf16});
    });
const OpSpec<N> kLinear(
    "linear", Runs::kAny, kernel<&ops::Backend::linear>,
    {arg<&N::a>("input"), arg<&N::b>("weight", kBf16), arg<&N::bias>("bias", kOptional),
     out<&N::out, &N::product, &rules::Product::out>()},
    [](const char* fn, N& op) { op.product = rules::linear(fn, op.a->shape(), op.b->shape(), shape_of(op.bias)); },
    [](const Call& call, N& op) {
      const rules::Product& p = op.product;
      call.backend.linear({.out = op.out,
                           .input = op.a->data(),
                           .weight = op.b->weight().f32,
                           .bias = data_of(op.bias),
                           .rows = p.batch,
                           .m = p.n,
                           .k = p.k,
                           .precision = gemm_precision(),
                           .weight_bf16 = op.b->weight().bf16});
    });

// [sync] Row ops shaped like x (permute0213 swaps its middle axes); tanhBackward reads the forward's output.
template <ops::Activation Op>
OpSpec<N> unary(const char* name) {
  return OpSpec<N>(name, Runs::kAny, kernel<&ops::Backend::unary>, {arg<&N::x>("x"), out<&N::out, &N::x>()}, nullptr,
                   [](const Call& call, N& op) {
                     call.backend.unary({Op, op.out, op.x->data(), op.x->numel()});
                   });
}

template <ops::Activation Op>
OpSpec<N> unary_backward(const char* name, const char* saved) {
  return OpSpec<N>(
      name, Runs::kAny, kernel<&ops::Backend::unary_backward>,
      {arg<&N::x>(saved), arg<&N::grad_output>("gradOutput"), out<&N::out, &N::x>()},
      [](const char* fn, N& op) {
        const char* saved_name = Op == ops::Activation::kTanh ? "output" : "x";
        rules::same_shape(fn, saved_name, op.x->shape(), "gradOutput", op.grad_output->shape());
      },
      [](const Call& call, N& op) {
        call.backend.unary_backward({Op, op.out, op.x->data(), op.grad_output->data(), op.x->numel()});
      });
}

const OpSpec<N> kGelu = unary<ops::Activation::kGelu>("gelu");
const OpSpec<N> kRelu = unary<ops::Activation::kRelu>("relu");
const OpSpec<N> kTanh = unary<ops::Activation::kTanh>("tanh");
const OpSpec<N> kGeluTanh = unary<ops::Activation::kGeluTanh>("geluTanh");
const OpSpec<N> kSilu = unary<ops::Activation::kSilu>("silu");
const OpSpec<N> kGeluBackward = unary_backward<ops::Activation::kGelu>("geluBackward", "x");
const OpSpec<N> kGeluTanhBackward = unary_backward<ops::Activation::kGeluTanh>("geluTanhBackward", "x");
const OpSpec<N> kSiluBackward = unary_backward<ops::Activation::kSilu>("siluBackward", "x");
const OpSpec<N> kReluBackward = unary_backward<ops::Activation::kRelu>("reluBackward", "x");
const OpSpec<N> kTanhBackward = unary_backward<ops::Activation::kTanh>("tanhBackward", "output");
const OpSpec<N> kPermute0213(
    "permute0213", Runs::kAny, kernel<&ops::Backend::permute0213>, {arg<&N::x>("x"), out<&N::out, &N::shape>()},
    [](const char* fn, N& op) { op.shape = rules::permute0213(fn, op.x->shape()); },
    [](const Call& call, N& op) {
      const Shape& s = op.x->shape();
      call.backend.permute0213({op.out, op.x->data(), s[0], s[1], s[2], s[3]});
    });
const OpSpec<N> kRotary(
    "rotary", Runs::kAny, kernel<&ops::Backend::rotary>,
    {arg<&N::x>("x"), arg<&N::positions>("positions"),
     arg<&N::base>("base", closed(1, std::numeric_limits<double>::infinity())), arg<&N::inverse>("inverse"),
     out<&N::out, &N::x>()},
    [](const char* fn, N& op) { rules::rotary(fn, op.x->shape(), op.positions.data, op.positions.length, op.base); },
    [](const Call& call, N& op) {
      const Shape& s = op.x->shape();
      call.backend.rotary({op.out, op.x->data(), op.positions.data, s[0], s[1], s[2], s[3], op.base, op.inverse});
    });
const OpSpec<N> kDropout("dropout", Runs::kAny, kernel<&ops::Backend::dropout>,
                         {arg<&N::x>("x"), arg<&N::p>("p", closed(0, 1)),
                          arg<&N::seed>("seed", closed(0, kMaxSafeInteger)), out<&N::out, &N::x>()},
                         nullptr, [](const Call& call, N& op) {
                           call.backend.dropout({op.out, op.x->data(), op.x->numel(), op.p, op.seed});
                         });

const OpSpec<N> kLayerNorm(
    "layerNorm", Runs::kAny, kernel<&ops::Backend::layer_norm>,
    {arg<&N::x>("x"), arg<&N::gamma>("gamma"), arg<&N::beta>("beta"), arg<&N::eps>("eps", kPositive),
     out<&N::out, &N::x>(), out<&N::out_mean, &N::rows_shape>("mean"), out<&N::out_rstd, &N::rows_shape>("rstd")},
    [](const char* fn, N& op) {
      op.rows = rules::layer_norm(fn, op.x->shape(), op.gamma->shape(), &op.beta->shape(), nullptr, nullptr, nullptr);
      op.rows_shape = rules::vector(op.rows.rows);
    },
    [](const Call& call, N& op) {
      call.backend.layer_norm({op.out, op.out_mean, op.out_rstd, op.x->data(), op.gamma->data(), op.beta->data(),
                               op.rows.rows, op.rows.d, op.eps});
    });
const OpSpec<N> kLayerNormBackward(
    "layerNormBackward", Runs::kAny, kernel<&ops::Backend::layer_norm_backward>,
    {arg<&N::grad_output>("gradOutput"), arg<&N::x>("x"), arg<&N::gamma>("gamma"), arg<&N::mean>("mean"),
     arg<&N::rstd>("rstd"), out<&N::out, &N::x>("input"), out<&N::grad_gamma, &N::gamma>("gamma"),
     out<&N::grad_beta, &N::gamma>("beta")},
    [](const char* fn, N& op) {
      op.rows = rules::layer_norm(fn, op.x->shape(), op.gamma->shape(), nullptr, &op.grad_output->shape(),
                                  &op.mean->shape(), &op.rstd->shape());
    },
    [](const Call& call, N& op) {
      call.backend.layer_norm_backward({op.out, op.grad_gamma, op.grad_beta, op.grad_output->data(), op.x->data(),
                                        op.gamma->data(), op.mean->data(), op.rstd->data(), op.rows.rows, op.rows.d});
    });
const OpSpec<N> kSoftmax(
    "softmax", Runs::kAny, kernel<&ops::Backend::softmax>,
    {arg<&N::x>("x"), arg<&N::mask>("mask", kOptional), out<&N::out, &N::x>()},
    [](const char* fn, N& op) { op.softmax = rules::softmax(fn, op.x->shape(), shape_of(op.mask)); },
    [](const Call& call, N& op) {
      const rules::SoftmaxRows& r = op.softmax;
      call.backend.softmax({op.out, op.x->data(), data_of(op.mask), r.batch, r.rows_per_batch, r.d});
    });
const OpSpec<N> kSoftmaxBackward(
    "softmaxBackward", Runs::kAny, kernel<&ops::Backend::softmax_backward>,
    {arg<&N::x>("output"), arg<&N::grad_output>("gradOutput"), out<&N::out, &N::x>()},
    [](const char* fn, N& op) { op.rows = rules::softmax_backward(fn, op.x->shape(), op.grad_output->shape()); },
    [](const Call& call, N& op) {
      call.backend.softmax_backward({op.out, op.x->data(), op.grad_output->data(), op.rows.rows, op.rows.d});
    });

// [sync] Ops over integer ids: embedding tables (deterministic backward) and cross-entropy over labels.
const OpSpec<N> kEmbedding(
    "embedding", Runs::kAny, kernel<&ops::Backend::embedding>,
    {arg<&N::table>("weight", kBf16), arg<&N::ids>("ids"), out<&N::out, &N::shape>()},
    [](const char* fn, N& op) {
      op.d = rules::embedding(fn, op.table->shape(), op.ids.data, op.ids.length, 0);
      op.shape = Shape::from({op.ids.length, op.d}, "output");
    },
    [](const Call& call, N& op) {
      const WeightView table = op.table->weight();
      call.backend.embedding({op.out, table.f32, op.ids.data, op.ids.length, op.d, table.bf16});
    });
const OpSpec<N> kEmbeddingBackward(
    "embeddingBackward", Runs::kAny, kernel<&ops::Backend::embedding_backward>,
    {arg<&N::table>("gradOutput"), arg<&N::ids>("ids"), arg<&N::vocab_size>("vocabSize", closed(1, kMaxInt32)),
     out<&N::out, &N::shape>()},
    [](const char* fn, N& op) {
      op.d = rules::embedding(fn, op.table->shape(), op.ids.data, op.ids.length, op.vocab_size);
      op.shape = Shape::from({op.vocab_size, op.d}, "vocabSize");
    },
    [](const Call& call, N& op) {
      call.backend.embedding_backward({op.out, op.table->data(), op.ids.data, op.ids.length, op.vocab_size, op.d});
    });

Field<N> ignore_index() { return arg<&N::ignore_index>("ignoreIndex", closed(-kMaxInt32 - 1, kMaxInt32)); }
void classification(const char* fn, N& op) {
  rules::classification(fn, op.table->shape(), op.ids.data, op.ids.length, op.ignore_index);
}

const OpSpec<N> kCrossEntropy(
    "crossEntropy", Runs::kAny, kernel<&ops::Backend::cross_entropy>,
    {arg<&N::table>("logits"), arg<&N::ids>("labels"), ignore_index(), out<&N::out, &N::scalar>()}, classification,
    [](const Call& call, N& op) {
      const Shape& s = op.table->shape();
      call.backend.cross_entropy({op.out, op.table->data(), op.ids.data, s[0], s[1], op.ignore_index});
    });
const OpSpec<N> kCrossEntropyBackward("crossEntropyBackward", Runs::kAny, kernel<&ops::Backend::cross_entropy_backward>,
                                      {arg<&N::table>("logits"), arg<&N::ids>("labels"), ignore_index(),
                                       arg<&N::grad_loss>("gradLoss"), out<&N::out, &N::table>()},
                                      classification, [](const Call& call, N& op) {
                                        const Shape& s = op.table->shape();
                                        call.backend.cross_entropy_backward({op.out, op.table->data(), op.ids.data,
                                                                             s[0], s[1], op.ignore_index,
                                                                             op.grad_loss});
                                      });

// [sync] mseLoss and bceWithLogits: rank-0 means of two same-shaped tensors, with one argument layout for both.
constexpr char kPrediction[] = "prediction", kTarget[] = "target", kLogits[] = "logits", kTargets[] = "targets";

template <auto Entry, bool kBackward, const char* kFirst, const char* kSecond>
OpSpec<N> loss(const char* name) {
  std::vector<Field<N>> fields{arg<&N::prediction>(kFirst), arg<&N::target>(kSecond)};
  fields.push_back(kBackward ? out<&N::out, &N::prediction>() : out<&N::out, &N::scalar>());
  if (kBackward) fields.push_back(arg<&N::grad_loss>("gradLoss"));
  return OpSpec<N>(
      name, Runs::kAny, kernel<Entry>, fields,
      [](const char* fn, N& op) { rules::same_shape(fn, kFirst, op.prediction->shape(), kSecond, op.target->shape()); },
      [](const Call& call, N& op) {
        const float *prediction = op.prediction->data(), *target = op.target->data();
        const int64_t n = op.prediction->numel();
        if constexpr (kBackward) (call.backend.*Entry)({op.out, prediction, target, n, op.grad_loss});
        if constexpr (!kBackward) (call.backend.*Entry)({op.out, prediction, target, n});
      });
}

const OpSpec<N> kMseLoss = loss<&ops::Backend::mse_loss, false, kPrediction, kTarget>("mseLoss");
const OpSpec<N> kMseLossBackward =
    loss<&ops::Backend::mse_loss_backward, true, kPrediction, kTarget>("mseLossBackward");
const OpSpec<N> kBce = loss<&ops::Backend::bce_with_logits, false, kLogits, kTargets>("bceWithLogits");
const OpSpec<N> kBceBackward =
    loss<&ops::Backend::bce_with_logits_backward, true, kLogits, kTargets>("bceWithLogitsBackward");

// [sync] attention -> { output, logsumexp [batch, heads, Lq] }; attentionBackward -> { query, key, value }.
std::vector<Field<N>> attention_fields(std::initializer_list<Field<N>> more) {
  std::vector<Field<N>> fields{arg<&N::query>("query"),          arg<&N::key>("key"),
                               arg<&N::value>("value"),          arg<&N::key_mask>("keyMask", kOptional),
                               arg<&N::causal>("causal"),        arg<&N::scale>("scale"),
                               arg<&N::p>("p", half_open(0, 1)), arg<&N::seed>("seed", closed(0, kMaxSafeInteger)),
                               arg<&N::reference>("reference")};
  fields.insert(fields.end(), more);
  return fields;
}

void attention_rule(const char* fn, N& op) {
  rules::attention(fn, op.query->shape(), op.key->shape(), op.value->shape(), shape_of(op.key_mask),
                   shape_of(op.grad_output), shape_of(op.output), shape_of(op.logsumexp), op.dims);
  op.dims.scale = op.scale;
  op.dims.causal = op.causal;
  op.dims.reference = op.reference;
  op.dims.dropout = {op.p, op.seed};
  const Shape& q = op.query->shape();
  op.lse_shape = Shape::from({q[0], q[1], q[2]}, "logsumexp");
}

const OpSpec<N> kAttention("attention", Runs::kAny, kernel<&ops::Backend::attention>,
                           attention_fields({out<&N::out, &N::query>(),
                                             out<&N::out_logsumexp, &N::lse_shape>("logsumexp")}),
                           attention_rule, [](const Call& call, N& op) {
                             call.backend.attention({.out = op.out,
                                                     .logsumexp = op.out_logsumexp,
                                                     .query = op.query->data(),
                                                     .key = op.key->data(),
                                                     .value = op.value->data(),
                                                     .key_mask = data_of(op.key_mask),
                                                     .dims = op.dims});
                           });
const OpSpec<N> kAttentionBackward("attentionBackward", Runs::kAny, kernel<&ops::Backend::attention_backward>,
                                   attention_fields({arg<&N::grad_output>("gradOutput"), arg<&N::output>("output"),
                                                     arg<&N::logsumexp>("logsumexp"), out<&N::out, &N::query>("query"),
                                                     out<&N::grad_key, &N::key>("key"),
                                                     out<&N::grad_value, &N::value>("value")}),
                                   attention_rule, [](const Call& call, N& op) {
                                     call.backend.attention_backward({.grad_query = op.out,
                                                                      .grad_key = op.grad_key,
                                                                      .grad_value = op.grad_value,
                                                                      .grad_out = op.grad_output->data(),
                                                                      .query = op.query->data(),
                                                                      .key = op.key->data(),
                                                                      .value = op.value->data(),
                                                                      .key_mask = data_of(op.key_mask),
                                                                      .out = op.output->data(),
                                                                      .logsumexp = op.logsumexp->data(),
                                                                      .dims = op.dims});
                                   });

// [sync] Decoders' rmsNorm (Llama's) -> { output, rstd }: weight ⊙ x / sqrt(mean(x²) + eps) over the last axis, rstd
// [rows] saved for rmsNormBackward -> { input, weight }.
void rms_rows(const char* fn, N& op) {  // gradOutput and rstd are null in the forward
  op.rows = rules::rms_norm(fn, op.x->shape(), op.weight->shape(), shape_of(op.grad_output), shape_of(op.rstd));
  op.rows_shape = rules::vector(op.rows.rows);
}

const OpSpec<N> kRmsNorm(
    "rmsNorm", Runs::kAny, kernel<&ops::Backend::rms_norm>,
    {arg<&N::x>("x"), arg<&N::weight>("weight"), arg<&N::eps>("eps", kPositive), out<&N::out, &N::x>(),
     out<&N::out_rstd, &N::rows_shape>("rstd")},
    rms_rows, [](const Call& call, N& op) {
      call.backend.rms_norm({op.out, op.out_rstd, op.x->data(), op.weight->data(), op.rows.rows, op.rows.d, op.eps});
    });
const OpSpec<N> kRmsNormBackward("rmsNormBackward", Runs::kAny, kernel<&ops::Backend::rms_norm_backward>,
                                 {arg<&N::grad_output>("gradOutput"), arg<&N::x>("x"), arg<&N::weight>("weight"),
                                  arg<&N::rstd>("rstd"), out<&N::out, &N::x>("input"),
                                  out<&N::grad_weight, &N::weight>("weight")},
                                 rms_rows, [](const Call& call, N& op) {
                                   call.backend.rms_norm_backward({.grad_x = op.out,
                                                                   .grad_weight = op.grad_weight,
                                                                   .grad_out = op.grad_output->data(),
                                                                   .x = op.x->data(),
                                                                   .weight = op.weight->data(),
                                                                   .rstd = op.rstd->data(),
                                                                   .rows = op.rows.rows,
                                                                   .d = op.rows.d});
                                 });

// [sync] swiglu: silu(gate) ⊙ up; swigluBackward -> { gate, up }.
void same_gate_shapes(const char* fn, N& op) {
  rules::same_shape(fn, "gate", op.gate->shape(), "up", op.up->shape());
  if (op.grad_output != nullptr) {
    rules::same_shape(fn, "gate", op.gate->shape(), "gradOutput", op.grad_output->shape());
  }
}

const OpSpec<N> kSwiglu("swiglu", Runs::kAny, kernel<&ops::Backend::swiglu>,
                        {arg<&N::gate>("gate"), arg<&N::up>("up"), out<&N::out, &N::gate>()}, same_gate_shapes,
                        [](const Call& call, N& op) {
                          call.backend.swiglu(
                              {.out = op.out, .gate = op.gate->data(), .up = op.up->data(), .n = op.gate->numel()});
                        });
const OpSpec<N> kSwigluBackward("swigluBackward", Runs::kAny, kernel<&ops::Backend::swiglu_backward>,
                                {arg<&N::gate>("gate"), arg<&N::up>("up"), arg<&N::grad_output>("gradOutput"),
                                 out<&N::out, &N::gate>("gate"), out<&N::grad_up, &N::up>("up")},
                                same_gate_shapes, [](const Call& call, N& op) {
                                  call.backend.swiglu_backward({.grad_gate = op.out,
                                                                .grad_up = op.grad_up,
                                                                .gate = op.gate->data(),
                                                                .up = op.up->data(),
                                                                .grad_out = op.grad_output->data(),
                                                                .n = op.gate->numel()});
                                });

}  // namespace

}  // namespace bidora::binding
