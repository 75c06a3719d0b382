// The neural-network ops, declared with op.h; shapes and ids checked by ../core/shape_rules. Each returns fresh
// tensors on its tensors' device (gradients too: callers accumulate). Ids and labels are Int32Arrays, viewed without
// copying and range-checked in host memory, so kernels on either device index safely.
#include "op.h"

namespace bidora::binding {

namespace {

// [sync] gelu({ x }), geluTanh({ x }), silu({ x }), relu({ x }), tanh({ x }): shaped like x (GELU in its erf form and
// its tanh approximation); geluBackward({ x, gradOutput }) and the same for each, except tanhBackward({ output,
// gradOutput }): the input's gradient. Also permute0213({ x }):
// [a, b, c, d] -> [a, c, b, d], the attention head split and merge.
struct UnaryArgs {
  TensorHandle *x, *grad_output;
  Shape out;
};

template <ops::Activation Op>
OpSpec<UnaryArgs> unary(const char* name) {
  return OpSpec<UnaryArgs>(name, Runs::kAny, kernel<&ops::Backend::unary>, {arg<&UnaryArgs::x>("x")}, nullptr,
                           [](const Call& call, UnaryArgs& args) -> Napi::Value {
                             float* out;
                             Napi::Object result = call.output(args.x->shape(), &out);
                             call.backend.unary({Op, out, args.x->data(), args.x->numel()});
                             return result;
                           });
}

template <ops::Activation Op>
OpSpec<UnaryArgs> unary_backward(const char* name, const char* saved) {
  return OpSpec<UnaryArgs>(
      name, Runs::kAny, kernel<&ops::Backend::unary_backward>,
      {arg<&UnaryArgs::x>(saved), arg<&UnaryArgs::grad_output>("gradOutput")},
      [](const char* fn, UnaryArgs& args) {
        const char* saved_name = Op == ops::Activation::kTanh ? "output" : "x";
        rules::same_shape(fn, saved_name, args.x->shape(), "gradOutput", args.grad_output->shape());
      },
      [](const Call& call, UnaryArgs& args) -> Napi::Value {
        float* grad;
        Napi::Object result = call.output(args.x->shape(), &grad);
        call.backend.unary_backward({Op, grad, args.x->data(), args.grad_output->data(), args.x->numel()});
        return result;
      });
}

const OpSpec<UnaryArgs> kGelu = unary<ops::Activation::kGelu>("gelu");
const OpSpec<UnaryArgs> kRelu = unary<ops::Activation::kRelu>("relu");
const OpSpec<UnaryArgs> kTanh = unary<ops::Activation::kTanh>("tanh");
const OpSpec<UnaryArgs> kGeluTanh = unary<ops::Activation::kGeluTanh>("geluTanh");
const OpSpec<UnaryArgs> kSilu = unary<ops::Activation::kSilu>("silu");
const OpSpec<UnaryArgs> kGeluBackward = unary_backward<ops::Activation::kGelu>("geluBackward", "x");
const OpSpec<UnaryArgs> kGeluTanhBackward = unary_backward<ops::Activation::kGeluTanh>("geluTanhBackward", "x");
const OpSpec<UnaryArgs> kSiluBackward = unary_backward<ops::Activation::kSilu>("siluBackward", "x");
const OpSpec<UnaryArgs> kReluBackward = unary_backward<ops::Activation::kRelu>("reluBackward", "x");
const OpSpec<UnaryArgs> kTanhBackward = unary_backward<ops::Activation::kTanh>("tanhBackward", "output");

const OpSpec<UnaryArgs> kPermute0213(
    "permute0213", Runs::kAny, kernel<&ops::Backend::permute0213>, {arg<&UnaryArgs::x>("x")},
    [](const char* fn, UnaryArgs& args) { args.out = rules::permute0213(fn, args.x->shape()); },
    [](const Call& call, UnaryArgs& args) -> Napi::Value {
      const Shape& s = args.x->shape();
      float* out;
      Napi::Object result = call.output(args.out, &out);
      call.backend.permute0213({out, args.x->data(), s[0], s[1], s[2], s[3]});
      return result;
    });

// [sync] layerNorm({ x, gamma, beta, eps > 0 }) -> { output, mean, rstd }: over the last axis D of x, gamma and beta
// [D]; mean and rstd [rows] are saved for layerNormBackward({ gradOutput, x, gamma, mean, rstd }) -> { input, gamma,
// beta }.
struct LayerNormArgs {
  TensorHandle *x, *gamma, *beta, *grad_output, *mean, *rstd;
  float eps;
  rules::Rows rows;
};

using L = LayerNormArgs;
const OpSpec<L> kLayerNorm(
    "layerNorm", Runs::kAny, kernel<&ops::Backend::layer_norm>,
    {arg<&L::x>("x"), arg<&L::gamma>("gamma"), arg<&L::beta>("beta"), arg<&L::eps>("eps", kPositive)},
    [](const char* fn, L& args) {
      args.rows =
          rules::layer_norm(fn, args.x->shape(), args.gamma->shape(), &args.beta->shape(), nullptr, nullptr, nullptr);
    },
    [](const Call& call, L& args) -> Napi::Value {
      float *out, *mean, *rstd;
      const Shape rows = rules::vector(args.rows.rows);
      Napi::Object result =
          call.outputs({{"output", args.x->shape(), &out}, {"mean", rows, &mean}, {"rstd", rows, &rstd}});
      call.backend.layer_norm({out, mean, rstd, args.x->data(), args.gamma->data(), args.beta->data(), args.rows.rows,
                               args.rows.d, args.eps});
      return result;
    });

const OpSpec<L> kLayerNormBackward(
    "layerNormBackward", Runs::kAny, kernel<&ops::Backend::layer_norm_backward>,
    {arg<&L::grad_output>("gradOutput"), arg<&L::x>("x"), arg<&L::gamma>("gamma"), arg<&L::mean>("mean"),
     arg<&L::rstd>("rstd")},
    [](const char* fn, L& args) {
      args.rows = rules::layer_norm(fn, args.x->shape(), args.gamma->shape(), nullptr, &args.grad_output->shape(),
                                    &args.mean->shape(), &args.rstd->shape());
    },
    [](const Call& call, L& args) -> Napi::Value {
      float *input, *gamma, *beta;
      const Shape& d = args.gamma->shape();
      Napi::Object result =
          call.outputs({{"input", args.x->shape(), &input}, {"gamma", d, &gamma}, {"beta", d, &beta}});
      call.backend.layer_norm_backward({input, gamma, beta, args.grad_output->data(), args.x->data(),
                                        args.gamma->data(), args.mean->data(), args.rstd->data(), args.rows.rows,
                                        args.rows.d});
      return result;
    });

// [sync] softmax({ x, mask? }): over the last axis; mask [x.shape[0], x.shape[last]] broadcasts over the middle axes
// (a padding mask on [batch, heads, query, key] scores), 0 masks: masked entries are exactly 0, a fully masked row all
// zeros. softmaxBackward({ output, gradOutput }): output ⊙ (gradOutput − Σ gradOutput·output) per row.
struct SoftmaxArgs {
  TensorHandle *x, *mask, *grad_output;
  rules::SoftmaxRows rows;
  rules::Rows backward;
};

const OpSpec<SoftmaxArgs> kSoftmax(
    "softmax", Runs::kAny, kernel<&ops::Backend::softmax>,
    {arg<&SoftmaxArgs::x>("x"), arg<&SoftmaxArgs::mask>("mask", kOptional)},
    [](const char* fn, SoftmaxArgs& args) {
      args.rows = rules::softmax(fn, args.x->shape(), args.mask != nullptr ? &args.mask->shape() : nullptr);
    },
    [](const Call& call, SoftmaxArgs& args) -> Napi::Value {
      float* out;
      Napi::Object result = call.output(args.x->shape(), &out);
      const float* mask = args.mask != nullptr ? args.mask->data() : nullptr;
      call.backend.softmax({out, args.x->data(), mask, args.rows.batch, args.rows.rows_per_batch, args.rows.d});
      return result;
    });

const OpSpec<SoftmaxArgs> kSoftmaxBackward(
    "softmaxBackward", Runs::kAny, kernel<&ops::Backend::softmax_backward>,
    {arg<&SoftmaxArgs::x>("output"), arg<&SoftmaxArgs::grad_output>("gradOutput")},
    [](const char* fn, SoftmaxArgs& args) {
      args.backward = rules::softmax_backward(fn, args.x->shape(), args.grad_output->shape());
    },
    [](const Call& call, SoftmaxArgs& args) -> Napi::Value {
      const rules::Rows& rows = args.backward;
      float* grad;
      Napi::Object result = call.output(args.x->shape(), &grad);
      call.backend.softmax_backward({grad, args.x->data(), args.grad_output->data(), rows.rows, rows.d});
      return result;
    });

// [sync] embedding({ weight [V, D], ids }): [ids.length, D], weight's rows at ids. embeddingBackward({ gradOutput,
// ids, vocabSize }): [vocabSize, D], gradOutput's rows (one per id) added at their ids, deterministically (on the GPU
// at most 2^31 − 1 ids).
struct EmbeddingArgs {
  TensorHandle* weight;
  IntArray ids;
  int64_t vocab_size;
  int64_t d;
};

using E = EmbeddingArgs;
const OpSpec<E> kEmbedding(
    "embedding", Runs::kAny, kernel<&ops::Backend::embedding>, {arg<&E::weight>("weight"), arg<&E::ids>("ids")},
    [](const char* fn, E& args) {
      args.d = rules::embedding(fn, args.weight->shape(), args.ids.data, args.ids.length, 0);
    },
    [](const Call& call, E& args) -> Napi::Value {
      float* out;
      Napi::Object result = call.output(Shape::from({args.ids.length, args.d}, "output"), &out);
      call.backend.embedding({out, args.weight->data(), args.ids.data, args.ids.length, args.d});
      return result;
    });

const OpSpec<E> kEmbeddingBackward(
    "embeddingBackward", Runs::kAny, kernel<&ops::Backend::embedding_backward>,
    {arg<&E::weight>("gradOutput"), arg<&E::ids>("ids"), arg<&E::vocab_size>("vocabSize", closed(1, kMaxInt32))},
    [](const char* fn, E& args) {
      args.d = rules::embedding(fn, args.weight->shape(), args.ids.data, args.ids.length, args.vocab_size);
    },
    [](const Call& call, E& args) -> Napi::Value {
      float* grad;
      Napi::Object result = call.output(Shape::from({args.vocab_size, args.d}, "vocabSize"), &grad);
      call.backend.embedding_backward(
          {grad, args.weight->data(), args.ids.data, args.ids.length, args.vocab_size, args.d});
      return result;
    });

// [sync] crossEntropy({ logits [N, C], labels (N), ignoreIndex }): rank 0, the mean over rows whose label is not
// ignoreIndex of −log softmax(logits)[label] (0 when every row is ignored). crossEntropyBackward({ ..., gradLoss }):
// gradLoss · (softmax − onehot) / counted rows, zero rows where ignored.
struct CrossEntropyArgs {
  TensorHandle* logits;
  IntArray labels;
  int32_t ignore_index;
  float grad_loss;
};

using C = CrossEntropyArgs;
void classification(const char* fn, C& args) {
  rules::classification(fn, args.logits->shape(), args.labels.data, args.labels.length, args.ignore_index);
}

const OpSpec<C> kCrossEntropy(
    "crossEntropy", Runs::kAny, kernel<&ops::Backend::cross_entropy>,
    {arg<&C::logits>("logits"), arg<&C::labels>("labels"),
     arg<&C::ignore_index>("ignoreIndex", closed(-kMaxInt32 - 1, kMaxInt32))},
    classification, [](const Call& call, C& args) -> Napi::Value {
      float* loss;
      Napi::Object result = call.output(Shape(), &loss);
      const Shape& s = args.logits->shape();
      call.backend.cross_entropy({loss, args.logits->data(), args.labels.data, s[0], s[1], args.ignore_index});
      return result;
    });

const OpSpec<C> kCrossEntropyBackward("crossEntropyBackward", Runs::kAny, kernel<&ops::Backend::cross_entropy_backward>,
                                      {arg<&C::logits>("logits"), arg<&C::labels>("labels"),
                                       arg<&C::ignore_index>("ignoreIndex", closed(-kMaxInt32 - 1, kMaxInt32)),
                                       arg<&C::grad_loss>("gradLoss")},
                                      classification, [](const Call& call, C& args) -> Napi::Value {
                                        const Shape& s = args.logits->shape();
                                        float* grad;
                                        Napi::Object result = call.output(s, &grad);
                                        call.backend.cross_entropy_backward({grad, args.logits->data(),
                                                                             args.labels.data, s[0], s[1],
                                                                             args.ignore_index, args.grad_loss});
                                        return result;
                                      });

// [sync] mseLoss({ prediction, target }): rank 0, the mean of squared differences (0 when empty);
// mseLossBackward({ prediction, target, gradLoss }): 2 · gradLoss · (prediction − target) / n.
struct MseArgs {
  TensorHandle *prediction, *target;
  float grad_loss;
};

void same_shapes(const char* fn, MseArgs& args) {
  rules::same_shape(fn, "prediction", args.prediction->shape(), "target", args.target->shape());
}

const OpSpec<MseArgs> kMseLoss("mseLoss", Runs::kAny, kernel<&ops::Backend::mse_loss>,
                               {arg<&MseArgs::prediction>("prediction"), arg<&MseArgs::target>("target")}, same_shapes,
                               [](const Call& call, MseArgs& args) -> Napi::Value {
                                 float* loss;
                                 Napi::Object result = call.output(Shape(), &loss);
                                 TensorHandle &p = *args.prediction, &t = *args.target;
                                 call.backend.mse_loss({loss, p.data(), t.data(), p.numel()});
                                 return result;
                               });

const OpSpec<MseArgs> kMseLossBackward(
    "mseLossBackward", Runs::kAny, kernel<&ops::Backend::mse_loss_backward>,
    {arg<&MseArgs::prediction>("prediction"), arg<&MseArgs::target>("target"), arg<&MseArgs::grad_loss>("gradLoss")},
    same_shapes, [](const Call& call, MseArgs& args) -> Napi::Value {
      TensorHandle &p = *args.prediction, &t = *args.target;
      float* grad;
      Napi::Object result = call.output(p.shape(), &grad);
      call.backend.mse_loss_backward({grad, p.data(), t.data(), p.numel(), args.grad_loss});
      return result;
    });

// [sync] bceWithLogits({ logits, targets }): rank 0, the mean over every element of max(z, 0) − z·y + log(1 +
// exp(−|z|)) (PyTorch's BCEWithLogitsLoss; 0 when empty); targets are probabilities, 0 or 1 per class for multi-label.
// bceWithLogitsBackward({ logits, targets, gradLoss }): gradLoss · (σ(logits) − targets) / n.
struct BceArgs {
  TensorHandle *logits, *targets;
  float grad_loss;
};

void same_bce_shapes(const char* fn, BceArgs& args) {
  rules::same_shape(fn, "logits", args.logits->shape(), "targets", args.targets->shape());
}

const OpSpec<BceArgs> kBceWithLogits("bceWithLogits", Runs::kAny, kernel<&ops::Backend::bce_with_logits>,
                                     {arg<&BceArgs::logits>("logits"), arg<&BceArgs::targets>("targets")},
                                     same_bce_shapes, [](const Call& call, BceArgs& args) -> Napi::Value {
                                       float* loss;
                                       Napi::Object result = call.output(Shape(), &loss);
                                       TensorHandle &z = *args.logits, &y = *args.targets;
                                       call.backend.bce_with_logits({loss, z.data(), y.data(), z.numel()});
                                       return result;
                                     });

const OpSpec<BceArgs> kBceWithLogitsBackward(
    "bceWithLogitsBackward", Runs::kAny, kernel<&ops::Backend::bce_with_logits_backward>,
    {arg<&BceArgs::logits>("logits"), arg<&BceArgs::targets>("targets"), arg<&BceArgs::grad_loss>("gradLoss")},
    same_bce_shapes, [](const Call& call, BceArgs& args) -> Napi::Value {
      TensorHandle &z = *args.logits, &y = *args.targets;
      float* grad;
      Napi::Object result = call.output(z.shape(), &grad);
      call.backend.bce_with_logits_backward({grad, z.data(), y.data(), z.numel(), args.grad_loss});
      return result;
    });

// [sync] rotary({ x [batch, heads, seq, d], positions (batch · seq), base > 1, inverse }): each (token, head) row's
// pairs (x_i, x_{i+d/2}) turned by positions[b, s] · base^(−2i/d) radians (rotary position embeddings, transformers'
// rotate_half layout); inverse turns them back, which is the gradient.
struct RotaryArgs {
  TensorHandle* x;
  IntArray positions;
  float base;
  bool inverse;
};

const OpSpec<RotaryArgs> kRotary(
    "rotary", Runs::kAny, kernel<&ops::Backend::rotary>,
    {arg<&RotaryArgs::x>("x"), arg<&RotaryArgs::positions>("positions"),
     arg<&RotaryArgs::base>("base", closed(1, std::numeric_limits<double>::infinity())),
     arg<&RotaryArgs::inverse>("inverse")},
    [](const char* fn, RotaryArgs& args) {
      rules::rotary(fn, args.x->shape(), args.positions.data, args.positions.length, args.base);
    },
    [](const Call& call, RotaryArgs& args) -> Napi::Value {
      const Shape& shape = args.x->shape();
      float* out;
      Napi::Object result = call.output(shape, &out);
      call.backend.rotary(
          {out, args.x->data(), args.positions.data, shape[0], shape[1], shape[2], shape[3], args.base, args.inverse});
      return result;
    });

// [sync] dropout({ x, p in [0, 1], seed }): x ⊙ keep / (1 − p), keep_i drawn from (seed, i) alone, so backward is
// dropout({ x: gradOutput, p, seed }); the same mask on both devices.
struct DropoutArgs {
  TensorHandle* x;
  float p;
  uint64_t seed;
};

const OpSpec<DropoutArgs> kDropout("dropout", Runs::kAny, kernel<&ops::Backend::dropout>,
                                   {arg<&DropoutArgs::x>("x"), arg<&DropoutArgs::p>("p", closed(0, 1)),
                                    arg<&DropoutArgs::seed>("seed", closed(0, kMaxSafeInteger))},
                                   nullptr, [](const Call& call, DropoutArgs& args) -> Napi::Value {
                                     float* out;
                                     Napi::Object result = call.output(args.x->shape(), &out);
                                     call.backend.dropout({out, args.x->data(), args.x->numel(), args.p, args.seed});
                                     return result;
                                   });

// [sync] attention({ query [batch, heads, Lq, D], key, value [batch, kvHeads, Lk, D], keyMask? [batch, Lk], causal,
// scale, p in [0, 1), seed, reference }) -> { output, logsumexp [batch, heads, Lq] } (ops.h's Attention);
// attentionBackward({ the same, gradOutput, output, logsumexp }) -> { query, key, value }: their gradients.
struct AttentionArgs {
  TensorHandle *query, *key, *value, *key_mask, *grad_output, *output, *logsumexp;
  bool causal, reference;
  float scale, p;
  uint64_t seed;
  ops::AttentionDims dims;
};

using At = AttentionArgs;
std::vector<Field<At>> attention_fields(std::initializer_list<Field<At>> saved) {
  std::vector<Field<At>> fields{arg<&At::query>("query"),          arg<&At::key>("key"),
                                arg<&At::value>("value"),          arg<&At::key_mask>("keyMask", kOptional),
                                arg<&At::causal>("causal"),        arg<&At::scale>("scale"),
                                arg<&At::p>("p", half_open(0, 1)), arg<&At::seed>("seed", closed(0, kMaxSafeInteger)),
                                arg<&At::reference>("reference")};
  fields.insert(fields.end(), saved);
  return fields;
}

void attention_rule(const char* fn, At& a) {
  const auto shape = [](TensorHandle* t) { return t == nullptr ? nullptr : &t->shape(); };
  rules::attention(fn, a.query->shape(), a.key->shape(), a.value->shape(), shape(a.key_mask), shape(a.grad_output),
                   shape(a.output), shape(a.logsumexp), a.dims);
  a.dims.scale = a.scale;
  a.dims.causal = a.causal;
  a.dims.reference = a.reference;
  a.dims.dropout = {a.p, a.seed};
}

const float* data_of(TensorHandle* t) { return t == nullptr ? nullptr : t->data(); }

const OpSpec<At> kAttention(
    "attention", Runs::kAny, kernel<&ops::Backend::attention>, attention_fields({}), attention_rule,
    [](const Call& call, At& a) -> Napi::Value {
      float *out, *lse;
      const Shape& q = a.query->shape();
      Napi::Object result =
          call.outputs({{"output", q, &out}, {"logsumexp", Shape::from({q[0], q[1], q[2]}, "logsumexp"), &lse}});
      call.backend.attention({out, lse, a.query->data(), a.key->data(), a.value->data(), data_of(a.key_mask), a.dims});
      return result;
    });

const OpSpec<At> kAttentionBackward("attentionBackward", Runs::kAny, kernel<&ops::Backend::attention_backward>,
                                    attention_fields({arg<&At::grad_output>("gradOutput"), arg<&At::output>("output"),
                                                      arg<&At::logsumexp>("logsumexp")}),
                                    attention_rule, [](const Call& call, At& a) -> Napi::Value {
                                      float *dq, *dk, *dv;
                                      Napi::Object result = call.outputs({{"query", a.query->shape(), &dq},
                                                                          {"key", a.key->shape(), &dk},
                                                                          {"value", a.value->shape(), &dv}});
                                      call.backend.attention_backward({dq, dk, dv, a.grad_output->data(),
                                                                       a.query->data(), a.key->data(), a.value->data(),
                                                                       data_of(a.key_mask), a.output->data(),
                                                                       a.logsumexp->data(), a.dims});
                                      return result;
                                    });

}  // namespace

void register_nn(Napi::Env env, Napi::Object exports) {
  register_ops(env, exports, kGelu, kGeluTanh, kSilu, kRelu, kTanh, kGeluBackward, kGeluTanhBackward, kSiluBackward,
               kReluBackward, kTanhBackward, kPermute0213, kLayerNorm, kLayerNormBackward, kSoftmax, kSoftmaxBackward,
               kEmbedding, kEmbeddingBackward, kCrossEntropy, kCrossEntropyBackward, kMseLoss, kMseLossBackward,
               kBceWithLogits, kBceWithLogitsBackward, kRotary, kDropout, kAttention, kAttentionBackward);
}

}  // namespace bidora::binding
