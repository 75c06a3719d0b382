// The neural-network ops and the products, declared with op.h (lib/binding.ts documents each); shapes and ids checked
// by
// ../core/shape_rules. Each returns fresh tensors on its tensors' device (gradients too: callers accumulate). Ids and
// labels are Int32Arrays, viewed without copying and range-checked in host memory, so kernels on either device index
// safely.
#include "op.h"

namespace bidora::binding {

namespace {

struct ProductArgs {
  TensorHandle *a, *b, *bias;
  bool transpose_a = false, transpose_b = false;
  rules::Product product;
  float* out;
};
using P = ProductArgs;

const OpSpec<P> kMatmul(
    "matmul", Runs::kAny, kernel<&ops::Backend::matmul>,
    {arg<&P::a>("a"), arg<&P::b>("b"), arg<&P::transpose_a>("transposeA"), arg<&P::transpose_b>("transposeB"),
     out<&P::out, &P::product, &rules::Product::out>()},
    [](const char* fn, P& args) {
      args.product = rules::matmul(fn, args.a->shape(), args.b->shape(), args.transpose_a, args.transpose_b);
    },
    [](const Call& call, P& args) {
      const rules::Product& p = args.product;
      call.backend.matmul({args.out, args.a->data(), args.b->data(), p.batch, p.m, p.n, p.k, args.transpose_a,
                           args.transpose_b, p.shared_b, gemm_precision()});
    });
const OpSpec<P> kLinear(
    "linear", Runs::kAny, kernel<&ops::Backend::linear>,
    {arg<&P::a>("input"), arg<&P::b>("weight"), arg<&P::bias>("bias", kOptional),
     out<&P::out, &P::product, &rules::Product::out>()},
    [](const char* fn, P& args) {
      args.product = rules::linear(fn, args.a->shape(), args.b->shape(), shape_of(args.bias));
    },
    [](const Call& call, P& args) {
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
struct RowArgs {
  TensorHandle *x, *grad_output;
  IntArray positions;
  float base, p;
  uint64_t seed;
  bool inverse = false;
  Shape shape;
  float* out;
};
using X = RowArgs;

template <ops::Activation Op>
OpSpec<X> unary(const char* name) {
  return OpSpec<X>(name, Runs::kAny, kernel<&ops::Backend::unary>, {arg<&X::x>("x"), out<&X::out, &X::x>()}, nullptr,
                   [](const Call& call, X& args) {
                     call.backend.unary({Op, args.out, args.x->data(), args.x->numel()});
                   });
}

template <ops::Activation Op>
OpSpec<X> unary_backward(const char* name, const char* saved) {
  return OpSpec<X>(
      name, Runs::kAny, kernel<&ops::Backend::unary_backward>,
      {arg<&X::x>(saved), arg<&X::grad_output>("gradOutput"), out<&X::out, &X::x>()},
      [](const char* fn, X& args) {
        const char* saved_name = Op == ops::Activation::kTanh ? "output" : "x";
        rules::same_shape(fn, saved_name, args.x->shape(), "gradOutput", args.grad_output->shape());
      },
      [](const Call& call, X& args) {
        call.backend.unary_backward({Op, args.out, args.x->data(), args.grad_output->data(), args.x->numel()});
      });
}

const OpSpec<X> kGelu = unary<ops::Activation::kGelu>("gelu");
const OpSpec<X> kRelu = unary<ops::Activation::kRelu>("relu");
const OpSpec<X> kTanh = unary<ops::Activation::kTanh>("tanh");
const OpSpec<X> kGeluTanh = unary<ops::Activation::kGeluTanh>("geluTanh");
const OpSpec<X> kSilu = unary<ops::Activation::kSilu>("silu");
const OpSpec<X> kGeluBackward = unary_backward<ops::Activation::kGelu>("geluBackward", "x");
const OpSpec<X> kGeluTanhBackward = unary_backward<ops::Activation::kGeluTanh>("geluTanhBackward", "x");
const OpSpec<X> kSiluBackward = unary_backward<ops::Activation::kSilu>("siluBackward", "x");
const OpSpec<X> kReluBackward = unary_backward<ops::Activation::kRelu>("reluBackward", "x");
const OpSpec<X> kTanhBackward = unary_backward<ops::Activation::kTanh>("tanhBackward", "output");
const OpSpec<X> kPermute0213(
    "permute0213", Runs::kAny, kernel<&ops::Backend::permute0213>, {arg<&X::x>("x"), out<&X::out, &X::shape>()},
    [](const char* fn, X& args) { args.shape = rules::permute0213(fn, args.x->shape()); },
    [](const Call& call, X& args) {
      const Shape& s = args.x->shape();
      call.backend.permute0213({args.out, args.x->data(), s[0], s[1], s[2], s[3]});
    });
const OpSpec<X> kRotary(
    "rotary", Runs::kAny, kernel<&ops::Backend::rotary>,
    {arg<&X::x>("x"), arg<&X::positions>("positions"),
     arg<&X::base>("base", closed(1, std::numeric_limits<double>::infinity())), arg<&X::inverse>("inverse"),
     out<&X::out, &X::x>()},
    [](const char* fn, X& args) {
      rules::rotary(fn, args.x->shape(), args.positions.data, args.positions.length, args.base);
    },
    [](const Call& call, X& args) {
      const Shape& s = args.x->shape();
      call.backend.rotary(
          {args.out, args.x->data(), args.positions.data, s[0], s[1], s[2], s[3], args.base, args.inverse});
    });
const OpSpec<X> kDropout("dropout", Runs::kAny, kernel<&ops::Backend::dropout>,
                         {arg<&X::x>("x"), arg<&X::p>("p", closed(0, 1)),
                          arg<&X::seed>("seed", closed(0, kMaxSafeInteger)), out<&X::out, &X::x>()},
                         nullptr, [](const Call& call, X& args) {
                           call.backend.dropout({args.out, args.x->data(), args.x->numel(), args.p, args.seed});
                         });

struct NormArgs {
  TensorHandle *x, *gamma, *beta, *grad_output, *mean, *rstd, *mask;
  float eps;
  rules::Rows rows;
  rules::SoftmaxRows softmax;
  Shape rows_shape;
  float *out, *out_mean, *out_rstd, *grad_gamma, *grad_beta;
};
using N = NormArgs;

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
struct IndexArgs {
  TensorHandle* table;
  IntArray ids;
  int64_t vocab_size, d;
  int32_t ignore_index;
  float grad_loss;
  Shape shape;
  float* out;
};
using I = IndexArgs;

const OpSpec<I> kEmbedding(
    "embedding", Runs::kAny, kernel<&ops::Backend::embedding>,
    {arg<&I::table>("weight"), arg<&I::ids>("ids"), out<&I::out, &I::shape>()},
    [](const char* fn, I& args) {
      args.d = rules::embedding(fn, args.table->shape(), args.ids.data, args.ids.length, 0);
      args.shape = Shape::from({args.ids.length, args.d}, "output");
    },
    [](const Call& call, I& args) {
      call.backend.embedding({args.out, args.table->data(), args.ids.data, args.ids.length, args.d});
    });
const OpSpec<I> kEmbeddingBackward(
    "embeddingBackward", Runs::kAny, kernel<&ops::Backend::embedding_backward>,
    {arg<&I::table>("gradOutput"), arg<&I::ids>("ids"), arg<&I::vocab_size>("vocabSize", closed(1, kMaxInt32)),
     out<&I::out, &I::shape>()},
    [](const char* fn, I& args) {
      args.d = rules::embedding(fn, args.table->shape(), args.ids.data, args.ids.length, args.vocab_size);
      args.shape = Shape::from({args.vocab_size, args.d}, "vocabSize");
    },
    [](const Call& call, I& args) {
      call.backend.embedding_backward(
          {args.out, args.table->data(), args.ids.data, args.ids.length, args.vocab_size, args.d});
    });

Field<I> ignore_index() { return arg<&I::ignore_index>("ignoreIndex", closed(-kMaxInt32 - 1, kMaxInt32)); }
void classification(const char* fn, I& args) {
  rules::classification(fn, args.table->shape(), args.ids.data, args.ids.length, args.ignore_index);
}

const OpSpec<I> kCrossEntropy(
    "crossEntropy", Runs::kAny, kernel<&ops::Backend::cross_entropy>,
    {arg<&I::table>("logits"), arg<&I::ids>("labels"), ignore_index(), out<&I::out, &I::shape>()}, classification,
    [](const Call& call, I& args) {
      const Shape& s = args.table->shape();
      call.backend.cross_entropy({args.out, args.table->data(), args.ids.data, s[0], s[1], args.ignore_index});
    });
const OpSpec<I> kCrossEntropyBackward("crossEntropyBackward", Runs::kAny, kernel<&ops::Backend::cross_entropy_backward>,
                                      {arg<&I::table>("logits"), arg<&I::ids>("labels"), ignore_index(),
                                       arg<&I::grad_loss>("gradLoss"), out<&I::out, &I::table>()},
                                      classification, [](const Call& call, I& args) {
                                        const Shape& s = args.table->shape();
                                        call.backend.cross_entropy_backward({args.out, args.table->data(),
                                                                             args.ids.data, s[0], s[1],
                                                                             args.ignore_index, args.grad_loss});
                                      });

// [sync] mseLoss and bceWithLogits: rank-0 means of two same-shaped tensors, with one argument layout for both.
struct LossArgs {
  TensorHandle *prediction, *target;
  float grad_loss;
  Shape scalar;
  float* out;
};
using L = LossArgs;
constexpr char kPrediction[] = "prediction", kTarget[] = "target", kLogits[] = "logits", kTargets[] = "targets";

template <auto Entry, bool kBackward, const char* kFirst, const char* kSecond>
OpSpec<L> loss(const char* name) {
  std::vector<Field<L>> fields{arg<&L::prediction>(kFirst), arg<&L::target>(kSecond)};
  fields.push_back(kBackward ? out<&L::out, &L::prediction>() : out<&L::out, &L::scalar>());
  if (kBackward) fields.push_back(arg<&L::grad_loss>("gradLoss"));
  return OpSpec<L>(
      name, Runs::kAny, kernel<Entry>, fields,
      [](const char* fn, L& args) {
        rules::same_shape(fn, kFirst, args.prediction->shape(), kSecond, args.target->shape());
      },
      [](const Call& call, L& args) {
        const float *prediction = args.prediction->data(), *target = args.target->data();
        const int64_t n = args.prediction->numel();
        if constexpr (kBackward) (call.backend.*Entry)({args.out, prediction, target, n, args.grad_loss});
        if constexpr (!kBackward) (call.backend.*Entry)({args.out, prediction, target, n});
      });
}

const OpSpec<L> kMseLoss = loss<&ops::Backend::mse_loss, false, kPrediction, kTarget>("mseLoss");
const OpSpec<L> kMseLossBackward =
    loss<&ops::Backend::mse_loss_backward, true, kPrediction, kTarget>("mseLossBackward");
const OpSpec<L> kBce = loss<&ops::Backend::bce_with_logits, false, kLogits, kTargets>("bceWithLogits");
const OpSpec<L> kBceBackward =
    loss<&ops::Backend::bce_with_logits_backward, true, kLogits, kTargets>("bceWithLogitsBackward");

// [sync] attention -> { output, logsumexp [batch, heads, Lq] }; attentionBackward -> { query, key, value }.
struct AttentionArgs {
  TensorHandle *query, *key, *value, *key_mask, *grad_output, *output, *logsumexp;
  bool causal, reference;
  float scale, p;
  uint64_t seed;
  ops::AttentionDims dims;
  Shape rows;
  float *out, *out_logsumexp, *grad_key, *grad_value;
};
using At = AttentionArgs;

std::vector<Field<At>> attention_fields(std::initializer_list<Field<At>> more) {
  std::vector<Field<At>> fields{arg<&At::query>("query"),          arg<&At::key>("key"),
                                arg<&At::value>("value"),          arg<&At::key_mask>("keyMask", kOptional),
                                arg<&At::causal>("causal"),        arg<&At::scale>("scale"),
                                arg<&At::p>("p", half_open(0, 1)), arg<&At::seed>("seed", closed(0, kMaxSafeInteger)),
                                arg<&At::reference>("reference")};
  fields.insert(fields.end(), more);
  return fields;
}

void attention_rule(const char* fn, At& args) {
  rules::attention(fn, args.query->shape(), args.key->shape(), args.value->shape(), shape_of(args.key_mask),
                   shape_of(args.grad_output), shape_of(args.output), shape_of(args.logsumexp), args.dims);
  args.dims.scale = args.scale;
  args.dims.causal = args.causal;
  args.dims.reference = args.reference;
  args.dims.dropout = {args.p, args.seed};
  const Shape& q = args.query->shape();
  args.rows = Shape::from({q[0], q[1], q[2]}, "logsumexp");
}

const OpSpec<At> kAttention("attention", Runs::kAny, kernel<&ops::Backend::attention>,
                            attention_fields({out<&At::out, &At::query>(),
                                              out<&At::out_logsumexp, &At::rows>("logsumexp")}),
                            attention_rule, [](const Call& call, At& args) {
                              call.backend.attention({.out = args.out,
                                                      .logsumexp = args.out_logsumexp,
                                                      .query = args.query->data(),
                                                      .key = args.key->data(),
                                                      .value = args.value->data(),
                                                      .key_mask = data_of(args.key_mask),
                                                      .dims = args.dims});
                            });
const OpSpec<At> kAttentionBackward(
    "attentionBackward", Runs::kAny, kernel<&ops::Backend::attention_backward>,
    attention_fields({arg<&At::grad_output>("gradOutput"), arg<&At::output>("output"), arg<&At::logsumexp>("logsumexp"),
                      out<&At::out, &At::query>("query"), out<&At::grad_key, &At::key>("key"),
                      out<&At::grad_value, &At::value>("value")}),
    attention_rule, [](const Call& call, At& args) {
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

}  // namespace

}  // namespace bidora::binding
