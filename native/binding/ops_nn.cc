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
    {arg<&N::a>("a"), arg<&N::b>("b"), arg<&N::transpose_a>("transposeA"), arg<&N::transpose_b>("transposeB"),
     out<&N::out, &N::product, &rules::Product::out>()},
    [](const char* fn, N& args) {
      args.product = rules::matmul(fn, args.a->shape(), args.b->shape(), args.transpose_a, args.transpose_b);
    },
    [](const Call& call, N& args) {
      const rules::Product& p = args.product;
      call.backend.matmul({args.out, args.a->data(), args.b->data(), p.batch, p.m, p.n, p.k, args.transpose_a,
                           args.transpose_b, p.shared_b, gemm_precision()});
    });
const OpSpec<N> kLinear(
    "linear", Runs::kAny, kernel<&ops::Backend::linear>,
    {arg<&N::a>("input"), arg<&N::b>("weight"), arg<&N::bias>("bias", kOptional),
     out<&N::out, &N::product, &rules::Product::out>()},
    [](const char* fn, N& args) {
      args.product = rules::linear(fn, args.a->shape(), args.b->shape(), shape_of(args.bias));
    },
    [](const Call& call, N& args) {
      const rules::Product& p = args.product;
      call.backend.linear({.out = args.out,
                           .input = args.a->data(),
                           .weight = args.b->data(),
                           .bias = data_of(args.bias),
                           .rows = p.batch,
                           .m = p.n,
                           .k = p.k,
                           .precision = gemm_precision()});
    });

// [sync] Row ops shaped like x (permute0213 swaps its middle axes); tanhBackward reads the forward's output.

template <ops::Activation Op>
OpSpec<N> unary(const char* name) {
  return OpSpec<N>(name, Runs::kAny, kernel<&ops::Backend::unary>, {arg<&N::x>("x"), out<&N::out, &N::x>()}, nullptr,
                   [](const Call& call, N& args) {
                     call.backend.unary({Op, args.out, args.x->data(), args.x->numel()});
                   });
}

template <ops::Activation Op>
OpSpec<N> unary_backward(const char* name, const char* saved) {
  return OpSpec<N>(
      name, Runs::kAny, kernel<&ops::Backend::unary_backward>,
      {arg<&N::x>(saved), arg<&N::grad_output>("gradOutput"), out<&N::out, &N::x>()},
      [](const char* fn, N& args) {
        const char* saved_name = Op == ops::Activation::kTanh ? "output" : "x";
        rules::same_shape(fn, saved_name, args.x->shape(), "gradOutput", args.grad_output->shape());
      },
      [](const Call& call, N& args) {
        call.backend.unary_backward({Op, args.out, args.x->data(), args.grad_output->data(), args.x->numel()});
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
    [](const char* fn, N& args) { args.shape = rules::permute0213(fn, args.x->shape()); },
    [](const Call& call, N& args) {
      const Shape& s = args.x->shape();
      call.backend.permute0213({args.out, args.x->data(), s[0], s[1], s[2], s[3]});
    });
const OpSpec<N> kRotary(
    "rotary", Runs::kAny, kernel<&ops::Backend::rotary>,
    {arg<&N::x>("x"), arg<&N::positions>("positions"),
     arg<&N::base>("base", closed(1, std::numeric_limits<double>::infinity())), arg<&N::inverse>("inverse"),
     out<&N::out, &N::x>()},
    [](const char* fn, N& args) {
      rules::rotary(fn, args.x->shape(), args.positions.data, args.positions.length, args.base);
    },
    [](const Call& call, N& args) {
      const Shape& s = args.x->shape();
      call.backend.rotary(
          {args.out, args.x->data(), args.positions.data, s[0], s[1], s[2], s[3], args.base, args.inverse});
    });
const OpSpec<N> kDropout("dropout", Runs::kAny, kernel<&ops::Backend::dropout>,
                         {arg<&N::x>("x"), arg<&N::p>("p", closed(0, 1)),
                          arg<&N::seed>("seed", closed(0, kMaxSafeInteger)), out<&N::out, &N::x>()},
                         nullptr, [](const Call& call, N& args) {
                           call.backend.dropout({args.out, args.x->data(), args.x->numel(), args.p, args.seed});
                         });

const OpSpec<N> kLayerNorm(
    "layerNorm", Runs::kAny, kernel<&ops::Backend::layer_norm>,
    {arg<&N::x>("x"), arg<&N::gamma>("gamma"), arg<&N::beta>("beta"), arg<&N::eps>("eps", kPositive),
     out<&N::out, &N::x>(), out<&N::out_mean, &N::rows_shape>("mean"), out<&N::out_rstd, &N::rows_shape>("rstd")},
    [](const char* fn, N& args) {
      args.rows =
          rules::layer_norm(fn, args.x->shape(), args.gamma->shape(), &args.beta->shape(), nullptr, nullptr, nullptr);
      args.rows_shape = rules::vector(args.rows.rows);
    },
    [](const Call& call, N& args) {
      call.backend.layer_norm({args.out, args.out_mean, args.out_rstd, args.x->data(), args.gamma->data(),
                               args.beta->data(), args.rows.rows, args.rows.d, args.eps});
    });
const OpSpec<N> kLayerNormBackward(
    "layerNormBackward", Runs::kAny, kernel<&ops::Backend::layer_norm_backward>,
    {arg<&N::grad_output>("gradOutput"), arg<&N::x>("x"), arg<&N::gamma>("gamma"), arg<&N::mean>("mean"),
     arg<&N::rstd>("rstd"), out<&N::out, &N::x>("input"), out<&N::grad_gamma, &N::gamma>("gamma"),
     out<&N::grad_beta, &N::gamma>("beta")},
    [](const char* fn, N& args) {
      args.rows = rules::layer_norm(fn, args.x->shape(), args.gamma->shape(), nullptr, &args.grad_output->shape(),
                                    &args.mean->shape(), &args.rstd->shape());
    },
    [](const Call& call, N& args) {
      call.backend.layer_norm_backward({args.out, args.grad_gamma, args.grad_beta, args.grad_output->data(),
                                        args.x->data(), args.gamma->data(), args.mean->data(), args.rstd->data(),
                                        args.rows.rows, args.rows.d});
    });
const OpSpec<N> kSoftmax(
    "softmax", Runs::kAny, kernel<&ops::Backend::softmax>,
    {arg<&N::x>("x"), arg<&N::mask>("mask", kOptional), out<&N::out, &N::x>()},
    [](const char* fn, N& args) { args.softmax = rules::softmax(fn, args.x->shape(), shape_of(args.mask)); },
    [](const Call& call, N& args) {
      const rules::SoftmaxRows& r = args.softmax;
      call.backend.softmax({args.out, args.x->data(), data_of(args.mask), r.batch, r.rows_per_batch, r.d});
    });
const OpSpec<N> kSoftmaxBackward(
    "softmaxBackward", Runs::kAny, kernel<&ops::Backend::softmax_backward>,
    {arg<&N::x>("output"), arg<&N::grad_output>("gradOutput"), out<&N::out, &N::x>()},
    [](const char* fn, N& args) {
      args.rows = rules::softmax_backward(fn, args.x->shape(), args.grad_output->shape());
    },
    [](const Call& call, N& args) {
      call.backend.softmax_backward({args.out, args.x->data(), args.grad_output->data(), args.rows.rows, args.rows.d});
    });

// [sync] Ops over integer ids: embedding tables (deterministic backward) and cross-entropy over labels.

const OpSpec<N> kEmbedding(
    "embedding", Runs::kAny, kernel<&ops::Backend::embedding>,
    {arg<&N::table>("weight"), arg<&N::ids>("ids"), out<&N::out, &N::shape>()},
    [](const char* fn, N& args) {
      args.d = rules::embedding(fn, args.table->shape(), args.ids.data, args.ids.length, 0);
      args.shape = Shape::from({args.ids.length, args.d}, "output");
    },
    [](const Call& call, N& args) {
      call.backend.embedding({args.out, args.table->data(), args.ids.data, args.ids.length, args.d});
    });
const OpSpec<N> kEmbeddingBackward(
    "embeddingBackward", Runs::kAny, kernel<&ops::Backend::embedding_backward>,
    {arg<&N::table>("gradOutput"), arg<&N::ids>("ids"), arg<&N::vocab_size>("vocabSize", closed(1, kMaxInt32)),
     out<&N::out, &N::shape>()},
    [](const char* fn, N& args) {
      args.d = rules::embedding(fn, args.table->shape(), args.ids.data, args.ids.length, args.vocab_size);
      args.shape = Shape::from({args.vocab_size, args.d}, "vocabSize");
    },
    [](const Call& call, N& args) {
      call.backend.embedding_backward(
          {args.out, args.table->data(), args.ids.data, args.ids.length, args.vocab_size, args.d});
    });

Field<N> ignore_index() { return arg<&N::ignore_index>("ignoreIndex", closed(-kMaxInt32 - 1, kMaxInt32)); }
void classification(const char* fn, N& args) {
  rules::classification(fn, args.table->shape(), args.ids.data, args.ids.length, args.ignore_index);
}

const OpSpec<N> kCrossEntropy(
    "crossEntropy", Runs::kAny, kernel<&ops::Backend::cross_entropy>,
    {arg<&N::table>("logits"), arg<&N::ids>("labels"), ignore_index(), out<&N::out, &N::shape>()}, classification,
    [](const Call& call, N& args) {
      const Shape& s = args.table->shape();
      call.backend.cross_entropy({args.out, args.table->data(), args.ids.data, s[0], s[1], args.ignore_index});
    });
const OpSpec<N> kCrossEntropyBackward("crossEntropyBackward", Runs::kAny, kernel<&ops::Backend::cross_entropy_backward>,
                                      {arg<&N::table>("logits"), arg<&N::ids>("labels"), ignore_index(),
                                       arg<&N::grad_loss>("gradLoss"), out<&N::out, &N::table>()},
                                      classification, [](const Call& call, N& args) {
                                        const Shape& s = args.table->shape();
                                        call.backend.cross_entropy_backward({args.out, args.table->data(),
                                                                             args.ids.data, s[0], s[1],
                                                                             args.ignore_index, args.grad_loss});
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
      [](const char* fn, N& args) {
        rules::same_shape(fn, kFirst, args.prediction->shape(), kSecond, args.target->shape());
      },
      [](const Call& call, N& args) {
        const float *prediction = args.prediction->data(), *target = args.target->data();
        const int64_t n = args.prediction->numel();
        if constexpr (kBackward) (call.backend.*Entry)({args.out, prediction, target, n, args.grad_loss});
        if constexpr (!kBackward) (call.backend.*Entry)({args.out, prediction, target, n});
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

void attention_rule(const char* fn, N& args) {
  rules::attention(fn, args.query->shape(), args.key->shape(), args.value->shape(), shape_of(args.key_mask),
                   shape_of(args.grad_output), shape_of(args.output), shape_of(args.logsumexp), args.dims);
  args.dims.scale = args.scale;
  args.dims.causal = args.causal;
  args.dims.reference = args.reference;
  args.dims.dropout = {args.p, args.seed};
  const Shape& q = args.query->shape();
  args.lse_shape = Shape::from({q[0], q[1], q[2]}, "logsumexp");
}

const OpSpec<N> kAttention("attention", Runs::kAny, kernel<&ops::Backend::attention>,
                           attention_fields({out<&N::out, &N::query>(),
                                             out<&N::out_logsumexp, &N::lse_shape>("logsumexp")}),
                           attention_rule, [](const Call& call, N& args) {
                             call.backend.attention({.out = args.out,
                                                     .logsumexp = args.out_logsumexp,
                                                     .query = args.query->data(),
                                                     .key = args.key->data(),
                                                     .value = args.value->data(),
                                                     .key_mask = data_of(args.key_mask),
                                                     .dims = args.dims});
                           });
const OpSpec<N> kAttentionBackward("attentionBackward", Runs::kAny, kernel<&ops::Backend::attention_backward>,
                                   attention_fields({arg<&N::grad_output>("gradOutput"), arg<&N::output>("output"),
                                                     arg<&N::logsumexp>("logsumexp"), out<&N::out, &N::query>("query"),
                                                     out<&N::grad_key, &N::key>("key"),
                                                     out<&N::grad_value, &N::value>("value")}),
                                   attention_rule, [](const Call& call, N& args) {
                                     call.backend.attention_backward({.grad_query = args.out,
                                                                      .grad_key = args.grad_key,
                                                                      .grad_value = args.grad_value,
                                                                      .grad_out = args.grad_output->data(),
                                                                      .query = args.query->data(),
                                                                      .key = args.key->data(),
                                                                      .value = args.value->data(),
                                                                      .key_mask = data_of(args.key_mask),
                                                                      .out = args.output->data(),
                                                                      .logsumexp = args.logsumexp->data(),
                                                                      .dims = args.dims});
                                   });

// [sync] Decoders' rmsNorm (Llama's) -> { output, rstd }: weight ⊙ x / sqrt(mean(x²) + eps) over the last axis, rstd
// [rows] saved for rmsNormBackward -> { input, weight }.

void rms_rows(const char* fn, N& args) {  // gradOutput and rstd are null in the forward
  args.rows =
      rules::rms_norm(fn, args.x->shape(), args.weight->shape(), shape_of(args.grad_output), shape_of(args.rstd));
  args.rows_shape = rules::vector(args.rows.rows);
}

const OpSpec<N> kRmsNorm("rmsNorm", Runs::kAny, kernel<&ops::Backend::rms_norm>,
                         {arg<&N::x>("x"), arg<&N::weight>("weight"), arg<&N::eps>("eps", kPositive),
                          out<&N::out, &N::x>(), out<&N::out_rstd, &N::rows_shape>("rstd")},
                         rms_rows, [](const Call& call, N& args) {
                           call.backend.rms_norm({args.out, args.out_rstd, args.x->data(), args.weight->data(),
                                                  args.rows.rows, args.rows.d, args.eps});
                         });
const OpSpec<N> kRmsNormBackward("rmsNormBackward", Runs::kAny, kernel<&ops::Backend::rms_norm_backward>,
                                 {arg<&N::grad_output>("gradOutput"), arg<&N::x>("x"), arg<&N::weight>("weight"),
                                  arg<&N::rstd>("rstd"), out<&N::out, &N::x>("input"),
                                  out<&N::grad_weight, &N::weight>("weight")},
                                 rms_rows, [](const Call& call, N& args) {
                                   call.backend.rms_norm_backward({.grad_x = args.out,
                                                                   .grad_weight = args.grad_weight,
                                                                   .grad_out = args.grad_output->data(),
                                                                   .x = args.x->data(),
                                                                   .weight = args.weight->data(),
                                                                   .rstd = args.rstd->data(),
                                                                   .rows = args.rows.rows,
                                                                   .d = args.rows.d});
                                 });

// [sync] swiglu: silu(gate) ⊙ up; swigluBackward -> { gate, up }.

void same_gate_shapes(const char* fn, N& args) {
  rules::same_shape(fn, "gate", args.gate->shape(), "up", args.up->shape());
  if (args.grad_output != nullptr) {
    rules::same_shape(fn, "gate", args.gate->shape(), "gradOutput", args.grad_output->shape());
  }
}

const OpSpec<N> kSwiglu(
    "swiglu", Runs::kAny, kernel<&ops::Backend::swiglu>,
    {arg<&N::gate>("gate"), arg<&N::up>("up"), out<&N::out, &N::gate>()}, same_gate_shapes,
    [](const Call& call, N& args) {
      call.backend.swiglu({.out = args.out, .gate = args.gate->data(), .up = args.up->data(), .n = args.gate->numel()});
    });
const OpSpec<N> kSwigluBackward("swigluBackward", Runs::kAny, kernel<&ops::Backend::swiglu_backward>,
                                {arg<&N::gate>("gate"), arg<&N::up>("up"), arg<&N::grad_output>("gradOutput"),
                                 out<&N::out, &N::gate>("gate"), out<&N::grad_up, &N::up>("up")},
                                same_gate_shapes, [](const Call& call, N& args) {
                                  call.backend.swiglu_backward({.grad_gate = args.out,
                                                                .grad_up = args.grad_up,
                                                                .gate = args.gate->data(),
                                                                .up = args.up->data(),
                                                                .grad_out = args.grad_output->data(),
                                                                .n = args.gate->numel()});
                                });

}  // namespace

}  // namespace bidora::binding
