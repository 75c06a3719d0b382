// The neural-network ops, declared with op.h: activations, layer norm, softmax, embedding, the head permute, losses,
// dropout. Each returns fresh tensors on its tensors' device (gradients are fresh too: callers accumulate). Integer
// ids and labels arrive as Int32Arrays (viewed without copying) and are range-checked here, in host memory, so kernels
// on either device index safely. Throw TypeError (not a live tensor, devices differ, not an Int32Array) and RangeError
// (shapes, an id or label out of range naming its position and value, scalars out of range).
#include "op.h"

namespace bidora::binding {

namespace {

using rules::leading_rows;

// [sync] gelu({ x }), relu({ x }), tanh({ x }): shaped like x (GELU in its erf form).
// [sync] geluBackward({ x, gradOutput }), reluBackward({ x, gradOutput }), tanhBackward({ output, gradOutput }).
struct UnaryArgs {
  TensorHandle *x, *grad_output;
};

template <ops::Activation Op>
OpSpec<UnaryArgs> unary(const char* name) {
  return OpSpec<UnaryArgs>(name, Runs::kAny, kernel<&ops::Backend::unary>, {tensor<&UnaryArgs::x>("x")}, nullptr,
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
      {tensor<&UnaryArgs::x>(saved), tensor<&UnaryArgs::grad_output>("gradOutput")},
      [](const char* fn, UnaryArgs& args) {
        rules::same_shape(fn, Op == ops::Activation::kTanh ? "output" : "x", args.x->shape(), "gradOutput",
                          args.grad_output->shape());
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
const OpSpec<UnaryArgs> kGeluBackward = unary_backward<ops::Activation::kGelu>("geluBackward", "x");
const OpSpec<UnaryArgs> kReluBackward = unary_backward<ops::Activation::kRelu>("reluBackward", "x");
const OpSpec<UnaryArgs> kTanhBackward = unary_backward<ops::Activation::kTanh>("tanhBackward", "output");

// [sync] layerNorm({ x, gamma, beta, eps }) -> { output, mean, rstd }: over the last axis D of x; gamma and beta [D];
// eps > 0; mean and rstd [rows], saved for backward.
// [sync] layerNormBackward({ gradOutput, x, gamma, mean, rstd }) -> { input, gamma, beta }: the three gradients.
struct LayerNormArgs {
  TensorHandle *x, *gamma, *beta, *grad_output, *mean, *rstd;
  float eps;
  int64_t rows, d;
};

const OpSpec<LayerNormArgs> kLayerNorm(
    "layerNorm", Runs::kAny, kernel<&ops::Backend::layer_norm>,
    {tensor<&LayerNormArgs::x>("x"), tensor<&LayerNormArgs::gamma>("gamma"), tensor<&LayerNormArgs::beta>("beta"),
     number<&LayerNormArgs::eps>("eps", kPositive)},
    [](const char* fn, LayerNormArgs& args) {
      const Shape& x = args.x->shape();
      args.d = rules::normalized_width(fn, x);
      args.rows = leading_rows(x);
      rules::vector_of(fn, "gamma", args.gamma->shape(), args.d, "x", x);
      rules::vector_of(fn, "beta", args.beta->shape(), args.d, "x", x);
    },
    [](const Call& call, LayerNormArgs& args) -> Napi::Value {
      float *out, *mean, *rstd;
      const Shape rows = rules::vector(args.rows);
      Napi::Object result =
          call.outputs({{"output", args.x->shape(), &out}, {"mean", rows, &mean}, {"rstd", rows, &rstd}});
      call.backend.layer_norm(
          {out, mean, rstd, args.x->data(), args.gamma->data(), args.beta->data(), args.rows, args.d, args.eps});
      return result;
    });

const OpSpec<LayerNormArgs> kLayerNormBackward(
    "layerNormBackward", Runs::kAny, kernel<&ops::Backend::layer_norm_backward>,
    {tensor<&LayerNormArgs::grad_output>("gradOutput"), tensor<&LayerNormArgs::x>("x"),
     tensor<&LayerNormArgs::gamma>("gamma"), tensor<&LayerNormArgs::mean>("mean"),
     tensor<&LayerNormArgs::rstd>("rstd")},
    [](const char* fn, LayerNormArgs& args) {
      const Shape& x = args.x->shape();
      args.d = rules::normalized_width(fn, x);
      rules::same_shape(fn, "x", x, "gradOutput", args.grad_output->shape());
      rules::vector_of(fn, "gamma", args.gamma->shape(), args.d, "x", x);
      args.rows = leading_rows(x);
      rules::vector_of(fn, "mean", args.mean->shape(), args.rows, "x", x);
      rules::vector_of(fn, "rstd", args.rstd->shape(), args.rows, "x", x);
    },
    [](const Call& call, LayerNormArgs& args) -> Napi::Value {
      float *input, *gamma, *beta;
      const Shape& d = args.gamma->shape();
      Napi::Object result =
          call.outputs({{"input", args.x->shape(), &input}, {"gamma", d, &gamma}, {"beta", d, &beta}});
      call.backend.layer_norm_backward({.grad_x = input,
                                        .grad_gamma = gamma,
                                        .grad_beta = beta,
                                        .grad_out = args.grad_output->data(),
                                        .x = args.x->data(),
                                        .gamma = args.gamma->data(),
                                        .mean = args.mean->data(),
                                        .rstd = args.rstd->data(),
                                        .rows = args.rows,
                                        .d = args.d});
      return result;
    });

// [sync] softmax({ x, mask? }): over the last axis. mask [x.shape[0], x.shape[last]] broadcasts over the middle axes
// (a [batch, key] padding mask on [batch, heads, query, key] scores); 0 masks, any other value attends; masked entries
// are exactly 0 and a fully masked row is all zeros.
// [sync] softmaxBackward({ output, gradOutput }): output ⊙ (gradOutput − Σ gradOutput·output) per row.
struct SoftmaxArgs {
  TensorHandle *x, *mask, *grad_output;
  rules::SoftmaxRows rows;
};

const OpSpec<SoftmaxArgs> kSoftmax(
    "softmax", Runs::kAny, kernel<&ops::Backend::softmax>,
    {tensor<&SoftmaxArgs::x>("x"), optional_tensor<&SoftmaxArgs::mask>("mask")},
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
    {tensor<&SoftmaxArgs::x>("output"), tensor<&SoftmaxArgs::grad_output>("gradOutput")},
    [](const char* fn, SoftmaxArgs& args) {
      rules::same_shape(fn, "output", args.x->shape(), "gradOutput", args.grad_output->shape());
      if (args.x->shape().rank < 1) {
        throw RangeError(std::string(fn) + ": output must have rank 1 to 4, but " +
                         describe("output", args.x->shape()));
      }
    },
    [](const Call& call, SoftmaxArgs& args) -> Napi::Value {
      const Shape& shape = args.x->shape();
      float* grad;
      Napi::Object result = call.output(shape, &grad);
      call.backend.softmax_backward(
          {grad, args.x->data(), args.grad_output->data(), leading_rows(shape), shape.last()});
      return result;
    });

// [sync] embedding({ weight [V, D], ids: Int32Array }): [ids.length, D], the rows of weight at ids.
// [sync] embeddingBackward({ gradOutput, ids, vocabSize }): [vocabSize, D], the rows of gradOutput [..., D]
// (ids.length rows) added at their ids, deterministically (on the GPU at most 2^31 − 1 ids).
struct EmbeddingArgs {
  TensorHandle* weight;
  IntArray ids;
  int64_t vocab_size;
};

const OpSpec<EmbeddingArgs> kEmbedding(
    "embedding", Runs::kAny, kernel<&ops::Backend::embedding>,
    {tensor<&EmbeddingArgs::weight>("weight"), value<&EmbeddingArgs::ids>("ids", Kind::kInt32Array)},
    [](const char* fn, EmbeddingArgs& args) {
      const Shape& shape = args.weight->shape();
      if (shape.rank != 2) {
        throw RangeError(std::string(fn) + ": expected weight of rank 2 [vocab, dim], but " +
                         describe("weight", shape));
      }
      rules::indices(fn, "ids", args.ids.data, args.ids.length, shape[0], "the vocabulary size, weight's first dim");
    },
    [](const Call& call, EmbeddingArgs& args) -> Napi::Value {
      const int64_t d = args.weight->shape()[1];
      float* out;
      Napi::Object result = call.output(rules::matrix(args.ids.length, d), &out);
      call.backend.embedding({out, args.weight->data(), args.ids.data, args.ids.length, d});
      return result;
    });

const OpSpec<EmbeddingArgs> kEmbeddingBackward(
    "embeddingBackward", Runs::kAny, kernel<&ops::Backend::embedding_backward>,
    {tensor<&EmbeddingArgs::weight>("gradOutput"), value<&EmbeddingArgs::ids>("ids", Kind::kInt32Array),
     integer<&EmbeddingArgs::vocab_size>("vocabSize", 1, kMaxInt32)},
    [](const char* fn, EmbeddingArgs& args) {
      const Shape& shape = args.weight->shape();
      if (shape.rank < 2 || leading_rows(shape) != args.ids.length) {
        throw RangeError(std::string(fn) + ": expected gradOutput of shape [" + std::to_string(args.ids.length) +
                         ", dim] (one row per id), but " + describe("gradOutput", shape) + " and ids has length " +
                         std::to_string(args.ids.length));
      }
      rules::indices(fn, "ids", args.ids.data, args.ids.length, args.vocab_size, "vocabSize");
    },
    [](const Call& call, EmbeddingArgs& args) -> Napi::Value {
      const int64_t d = args.weight->shape().last();
      float* grad;
      Napi::Object result = call.output(Shape::from({args.vocab_size, d}, "vocabSize"), &grad);
      call.backend.embedding_backward({grad, args.weight->data(), args.ids.data, args.ids.length, args.vocab_size, d});
      return result;
    });

// [sync] permute0213({ x [a, b, c, d] }): [a, c, b, d] (splitting and merging attention heads; its own inverse).
const OpSpec<UnaryArgs> kPermute0213(
    "permute0213", Runs::kAny, kernel<&ops::Backend::permute0213>, {tensor<&UnaryArgs::x>("x")},
    [](const char* fn, UnaryArgs& args) {
      if (args.x->shape().rank != 4) {
        throw RangeError(std::string(fn) + ": expected x of rank 4, but " + describe("x", args.x->shape()));
      }
    },
    [](const Call& call, UnaryArgs& args) -> Napi::Value {
      const Shape& s = args.x->shape();
      float* out;
      Napi::Object result = call.output(Shape::from({s[0], s[2], s[1], s[3]}, "output"), &out);
      call.backend.permute0213({out, args.x->data(), s[0], s[1], s[2], s[3]});
      return result;
    });

// [sync] crossEntropy({ logits [N, C], labels: Int32Array (N), ignoreIndex }): rank 0, the mean over rows whose label
// is not ignoreIndex of −log softmax(logits)[label]; 0 when every row is ignored.
// [sync] crossEntropyBackward({ logits, labels, ignoreIndex, gradLoss }): gradLoss · (softmax − onehot) / counted
// rows, zero rows where ignored.
struct CrossEntropyArgs {
  TensorHandle* logits;
  IntArray labels;
  int32_t ignore_index;
  float grad_loss;
};

void classification(const char* fn, CrossEntropyArgs& args) {
  const Shape& shape = args.logits->shape();
  if (shape.rank != 2 || shape[1] < 1) {
    throw RangeError(std::string(fn) + ": expected logits of shape [rows, classes] with classes >= 1, but " +
                     describe("logits", shape));
  }
  if (args.labels.length != shape[0]) {
    throw RangeError(std::string(fn) + ": labels must hold one label per row of logits, but labels has length " +
                     std::to_string(args.labels.length) + " and " + describe("logits", shape));
  }
  rules::indices(fn, "labels", args.labels.data, args.labels.length, shape[1], "the number of classes",
                 &args.ignore_index);
}

Field<CrossEntropyArgs> logits() { return tensor<&CrossEntropyArgs::logits>("logits"); }
Field<CrossEntropyArgs> labels() { return value<&CrossEntropyArgs::labels>("labels", Kind::kInt32Array); }
Field<CrossEntropyArgs> ignore_index() {
  return integer<&CrossEntropyArgs::ignore_index>("ignoreIndex", -kMaxInt32 - 1, kMaxInt32);
}

const OpSpec<CrossEntropyArgs> kCrossEntropy(
    "crossEntropy", Runs::kAny, kernel<&ops::Backend::cross_entropy>, {logits(), labels(), ignore_index()},
    classification, [](const Call& call, CrossEntropyArgs& args) -> Napi::Value {
      float* loss;
      Napi::Object result = call.output(Shape(), &loss);
      const Shape& s = args.logits->shape();
      call.backend.cross_entropy({loss, args.logits->data(), args.labels.data, s[0], s[1], args.ignore_index});
      return result;
    });

const OpSpec<CrossEntropyArgs> kCrossEntropyBackward(
    "crossEntropyBackward", Runs::kAny, kernel<&ops::Backend::cross_entropy_backward>,
    {logits(), labels(), ignore_index(), number<&CrossEntropyArgs::grad_loss>("gradLoss")}, classification,
    [](const Call& call, CrossEntropyArgs& args) -> Napi::Value {
      const Shape& s = args.logits->shape();
      float* grad;
      Napi::Object result = call.output(s, &grad);
      call.backend.cross_entropy_backward(
          {grad, args.logits->data(), args.labels.data, s[0], s[1], args.ignore_index, args.grad_loss});
      return result;
    });

// [sync] mseLoss({ prediction, target }): rank 0, the mean of squared differences (0 when empty).
// [sync] mseLossBackward({ prediction, target, gradLoss }): 2 · gradLoss · (prediction − target) / n.
struct MseArgs {
  TensorHandle *prediction, *target;
  float grad_loss;
};

void same_shapes(const char* fn, MseArgs& args) {
  rules::same_shape(fn, "prediction", args.prediction->shape(), "target", args.target->shape());
}

const OpSpec<MseArgs> kMseLoss(
    "mseLoss", Runs::kAny, kernel<&ops::Backend::mse_loss>,
    {tensor<&MseArgs::prediction>("prediction"), tensor<&MseArgs::target>("target")}, same_shapes,
    [](const Call& call, MseArgs& args) -> Napi::Value {
      float* loss;
      Napi::Object result = call.output(Shape(), &loss);
      call.backend.mse_loss({loss, args.prediction->data(), args.target->data(), args.prediction->numel()});
      return result;
    });

const OpSpec<MseArgs> kMseLossBackward("mseLossBackward", Runs::kAny, kernel<&ops::Backend::mse_loss_backward>,
                                       {tensor<&MseArgs::prediction>("prediction"), tensor<&MseArgs::target>("target"),
                                        number<&MseArgs::grad_loss>("gradLoss")},
                                       same_shapes, [](const Call& call, MseArgs& args) -> Napi::Value {
                                         float* grad;
                                         Napi::Object result = call.output(args.prediction->shape(), &grad);
                                         call.backend.mse_loss_backward({grad, args.prediction->data(),
                                                                         args.target->data(), args.prediction->numel(),
                                                                         args.grad_loss});
                                         return result;
                                       });

// [sync] dropout({ x, p, seed }): x ⊙ keep / (1 − p), keep_i drawn from (seed, i) alone, so backward is
// dropout({ x: gradOutput, p, seed }); the same mask on both devices. p in [0, 1]; seed an integer from 0 to 2^53 − 1.
struct DropoutArgs {
  TensorHandle* x;
  float p;
  uint64_t seed;
};

const OpSpec<DropoutArgs> kDropout("dropout", Runs::kAny, kernel<&ops::Backend::dropout>,
                                   {tensor<&DropoutArgs::x>("x"), number<&DropoutArgs::p>("p", closed(0, 1)),
                                    integer<&DropoutArgs::seed>("seed", 0, kMaxSafeInteger)},
                                   nullptr, [](const Call& call, DropoutArgs& args) -> Napi::Value {
                                     float* out;
                                     Napi::Object result = call.output(args.x->shape(), &out);
                                     call.backend.dropout({out, args.x->data(), args.x->numel(), args.p, args.seed});
                                     return result;
                                   });

}  // namespace

void register_nn(Napi::Env env, Napi::Object exports) {
  for (const auto* spec : {&kGelu, &kRelu, &kTanh, &kGeluBackward, &kReluBackward, &kTanhBackward, &kPermute0213}) {
    register_op(env, exports, *spec);
  }
  register_op(env, exports, kLayerNorm);
  register_op(env, exports, kLayerNormBackward);
  register_op(env, exports, kSoftmax);
  register_op(env, exports, kSoftmaxBackward);
  register_op(env, exports, kEmbedding);
  register_op(env, exports, kEmbeddingBackward);
  register_op(env, exports, kCrossEntropy);
  register_op(env, exports, kCrossEntropyBackward);
  register_op(env, exports, kMseLoss);
  register_op(env, exports, kMseLossBackward);
  register_op(env, exports, kDropout);
}

}  // namespace bidora::binding
