// The neural-network ops, declared with op.h: activations, layer norm, softmax, embedding, losses, the head permute,
// dropout. Each returns fresh tensors on its tensors' device; integer ids and labels arrive as Int32Arrays (viewed
// without copying) and are range-checked here, in host memory, so kernels on either device index safely.
#include <string>

#include "op.h"

namespace bidora::binding {

namespace {

Shape shape_of(std::vector<int64_t> dims, const char* argument) { return Shape::from(dims, argument); }

std::string both(const char* first, const Shape& a, const char* second, const Shape& b) {
  return describe(first, a) + " and " + describe(second, b);
}

void require_same_shape(const Call& call, const char* reference_name, const TensorHandle& reference, const char* name,
                        const TensorHandle& tensor) {
  if (tensor.shape() != reference.shape()) {
    call.fail(std::string(name) + " must have the shape of " + reference_name + ", but " +
              both(reference_name, reference.shape(), name, tensor.shape()));
  }
}

void require_vector(const Call& call, const char* name, const TensorHandle& tensor, int64_t length,
                    const char* reference_name, const Shape& reference) {
  const Shape& shape = tensor.shape();
  if (shape.rank != 1 || shape[0] != length) {
    call.fail("expected " + std::string(name) + " of shape [" + std::to_string(length) + "], but " +
              both(name, shape, reference_name, reference));
  }
}

// The product of every dim but the last: the rows a [..., D] tensor is read as, even when D is 0.
int64_t leading_rows(const Shape& shape) {
  int64_t rows = 1;
  for (int axis = 0; axis + 1 < shape.rank; ++axis) rows *= shape[axis];
  return rows;
}

// Every entry in [0, limit), or equal to *ignored when given. `what` names the limit in the message.
void check_indices(const Call& call, const char* name, const IntArray& values, int64_t limit, const char* what,
                   const int32_t* ignored = nullptr) {
  for (int64_t position = 0; position < values.length; ++position) {
    const int32_t value = values.data[position];
    if (ignored != nullptr && value == *ignored) continue;
    if (value < 0 || value >= limit) {
      call.fail(std::string(name) + "[" + std::to_string(position) + "] is " + std::to_string(value) +
                ", outside [0, " + std::to_string(limit) + ") (" + what + ")" +
                (ignored != nullptr ? " and not ignoreIndex " + std::to_string(*ignored) : ""));
    }
  }
}

// ---- activations ----

// [sync] gelu({ x }) / relu({ x }) / tanh({ x }): TensorHandle shaped like x. GELU is the erf form. Throws TypeError.
struct UnaryArgs {
  TensorHandle* x;
};

template <ops::Activation Op>
Napi::Value unary(const Call& call, UnaryArgs& args) {
  float* out = nullptr;
  Napi::Object result = call.output(args.x->shape(), &out);
  call.backend.unary({.op = Op, .out = out, .x = args.x->data(), .n = args.x->numel()});
  return result;
}

template <ops::Activation Op>
OpSpec<UnaryArgs> unary_spec(const char* name) {
  return {name, Runs::kAny, kernel<&ops::Backend::unary>, {tensor<&UnaryArgs::x>("x")}, nullptr, unary<Op>};
}

// [sync] geluBackward({ x, gradOutput }) / reluBackward({ x, gradOutput }) / tanhBackward({ output, gradOutput }):
// the input gradient. Throws TypeError (not a live tensor, devices differ), RangeError (gradOutput's shape differs).
struct UnaryBackwardArgs {
  TensorHandle *saved, *grad_output;
};

template <ops::Activation Op>
Napi::Value unary_backward(const Call& call, UnaryBackwardArgs& args) {
  require_same_shape(call, Op == ops::Activation::kTanh ? "output" : "x", *args.saved, "gradOutput", *args.grad_output);
  float* grad = nullptr;
  Napi::Object result = call.output(args.saved->shape(), &grad);
  call.backend.unary_backward({.op = Op,
                               .grad_x = grad,
                               .saved = args.saved->data(),
                               .grad_out = args.grad_output->data(),
                               .n = args.saved->numel()});
  return result;
}

template <ops::Activation Op>
OpSpec<UnaryBackwardArgs> unary_backward_spec(const char* name, const char* saved_name) {
  return {name,
          Runs::kAny,
          kernel<&ops::Backend::unary_backward>,
          {tensor<&UnaryBackwardArgs::saved>(saved_name), tensor<&UnaryBackwardArgs::grad_output>("gradOutput")},
          nullptr,
          unary_backward<Op>};
}

const OpSpec<UnaryArgs> kGelu = unary_spec<ops::Activation::kGelu>("gelu");
const OpSpec<UnaryArgs> kRelu = unary_spec<ops::Activation::kRelu>("relu");
const OpSpec<UnaryArgs> kTanh = unary_spec<ops::Activation::kTanh>("tanh");
const OpSpec<UnaryBackwardArgs> kGeluBackward = unary_backward_spec<ops::Activation::kGelu>("geluBackward", "x");
const OpSpec<UnaryBackwardArgs> kReluBackward = unary_backward_spec<ops::Activation::kRelu>("reluBackward", "x");
const OpSpec<UnaryBackwardArgs> kTanhBackward = unary_backward_spec<ops::Activation::kTanh>("tanhBackward", "output");

// ---- layer norm ----

// The last axis D of x, which must exist and be non-empty (the mean of nothing has no value).
int64_t normalized_width(const Call& call, const Shape& x) {
  if (x.rank < 1 || x.last() < 1) {
    call.fail("x must have rank 1 to 4 and a non-empty last axis, but " + describe("x", x));
  }
  return x.last();
}

// [sync] layerNorm({ x, gamma, beta, eps }) -> { output, mean, rstd }: over the last axis D of x; gamma and beta [D];
// mean and rstd [rows] (saved for backward). Throws TypeError, RangeError (shapes, eps not positive).
struct LayerNormArgs {
  TensorHandle *x, *gamma, *beta;
  float eps;
};

const OpSpec<LayerNormArgs> kLayerNorm{
    "layerNorm",
    Runs::kAny,
    kernel<&ops::Backend::layer_norm>,
    {tensor<&LayerNormArgs::x>("x"), tensor<&LayerNormArgs::gamma>("gamma"), tensor<&LayerNormArgs::beta>("beta"),
     number<&LayerNormArgs::eps>("eps", kPositive)},
    nullptr,
    [](const Call& call, LayerNormArgs& args) -> Napi::Value {
      const Shape& x = args.x->shape();
      const int64_t d = normalized_width(call, x);
      require_vector(call, "gamma", *args.gamma, d, "x", x);
      require_vector(call, "beta", *args.beta, d, "x", x);
      const int64_t rows = leading_rows(x);
      float *output = nullptr, *mean = nullptr, *rstd = nullptr;
      Napi::Object result = Napi::Object::New(call.env);
      result.Set("output", call.output(x, &output));
      result.Set("mean", call.output(shape_of({rows}, "mean"), &mean));
      result.Set("rstd", call.output(shape_of({rows}, "rstd"), &rstd));
      call.backend.layer_norm({.out = output,
                               .mean = mean,
                               .rstd = rstd,
                               .x = args.x->data(),
                               .gamma = args.gamma->data(),
                               .beta = args.beta->data(),
                               .rows = rows,
                               .d = d,
                               .eps = args.eps});
      return result;
    }};

// [sync] layerNormBackward({ gradOutput, x, gamma, mean, rstd }) -> { input, gamma, beta }: gradients of x, gamma and
// beta from layerNorm's saved mean and rstd. Throws TypeError, RangeError (shapes).
struct LayerNormBackwardArgs {
  TensorHandle *grad_output, *x, *gamma, *mean, *rstd;
};

const OpSpec<LayerNormBackwardArgs> kLayerNormBackward{
    "layerNormBackward",
    Runs::kAny,
    kernel<&ops::Backend::layer_norm_backward>,
    {tensor<&LayerNormBackwardArgs::grad_output>("gradOutput"), tensor<&LayerNormBackwardArgs::x>("x"),
     tensor<&LayerNormBackwardArgs::gamma>("gamma"), tensor<&LayerNormBackwardArgs::mean>("mean"),
     tensor<&LayerNormBackwardArgs::rstd>("rstd")},
    nullptr,
    [](const Call& call, LayerNormBackwardArgs& args) -> Napi::Value {
      const Shape& x = args.x->shape();
      const int64_t d = normalized_width(call, x);
      require_same_shape(call, "x", *args.x, "gradOutput", *args.grad_output);
      require_vector(call, "gamma", *args.gamma, d, "x", x);
      const int64_t rows = leading_rows(x);
      require_vector(call, "mean", *args.mean, rows, "x", x);
      require_vector(call, "rstd", *args.rstd, rows, "x", x);
      float *grad_input = nullptr, *grad_gamma = nullptr, *grad_beta = nullptr;
      Napi::Object result = Napi::Object::New(call.env);
      result.Set("input", call.output(x, &grad_input));
      result.Set("gamma", call.output(args.gamma->shape(), &grad_gamma));
      result.Set("beta", call.output(args.gamma->shape(), &grad_beta));
      call.backend.layer_norm_backward({.grad_x = grad_input,
                                        .grad_gamma = grad_gamma,
                                        .grad_beta = grad_beta,
                                        .grad_out = args.grad_output->data(),
                                        .x = args.x->data(),
                                        .gamma = args.gamma->data(),
                                        .mean = args.mean->data(),
                                        .rstd = args.rstd->data(),
                                        .rows = rows,
                                        .d = d});
      return result;
    }};

// ---- softmax ----

// [sync] softmax({ x, mask? }): over the last axis. mask [x.shape[0], x.shape[last]] broadcasts over the middle axes
// (a [batch, key] padding mask on [batch, heads, query, key] scores); 0 masks, any other value attends; masked
// entries are exactly 0 and a fully masked row is all zeros. Throws TypeError, RangeError (x of rank 0, or rank 1
// with a mask; mask's shape).
struct SoftmaxArgs {
  TensorHandle *x, *mask;
};

const OpSpec<SoftmaxArgs> kSoftmax{
    "softmax",
    Runs::kAny,
    kernel<&ops::Backend::softmax>,
    {tensor<&SoftmaxArgs::x>("x"), optional_tensor<&SoftmaxArgs::mask>("mask")},
    nullptr,
    [](const Call& call, SoftmaxArgs& args) -> Napi::Value {
      const Shape& shape = args.x->shape();
      if (shape.rank < 1) call.fail("x must have rank 1 to 4, but " + describe("x", shape));
      const int64_t d = shape.last();
      int64_t batch = 1, rows_per_batch = leading_rows(shape);
      if (args.mask != nullptr) {
        if (shape.rank < 2) call.fail("a mask needs x of rank 2 to 4 ([batch, ..., key]), but " + describe("x", shape));
        const Shape& mask_shape = args.mask->shape();
        batch = shape[0];
        if (mask_shape.rank != 2 || mask_shape[0] != batch || mask_shape[1] != d) {
          call.fail("expected mask of shape [" + std::to_string(batch) + ", " + std::to_string(d) +
                    "] (x's first and last dims), but " + both("mask", mask_shape, "x", shape));
        }
        rows_per_batch = batch == 0 ? 0 : leading_rows(shape) / batch;
      }
      float* out = nullptr;
      Napi::Object result = call.output(shape, &out);
      call.backend.softmax({.out = out,
                            .x = args.x->data(),
                            .mask = args.mask == nullptr ? nullptr : args.mask->data(),
                            .batch = batch,
                            .rows_per_batch = rows_per_batch,
                            .d = d});
      return result;
    }};

// [sync] softmaxBackward({ output, gradOutput }): output ⊙ (gradOutput − Σ gradOutput·output) per row. Throws
// TypeError, RangeError (shapes differ, rank 0).
struct SoftmaxBackwardArgs {
  TensorHandle *output, *grad_output;
};

const OpSpec<SoftmaxBackwardArgs> kSoftmaxBackward{
    "softmaxBackward",
    Runs::kAny,
    kernel<&ops::Backend::softmax_backward>,
    {tensor<&SoftmaxBackwardArgs::output>("output"), tensor<&SoftmaxBackwardArgs::grad_output>("gradOutput")},
    nullptr,
    [](const Call& call, SoftmaxBackwardArgs& args) -> Napi::Value {
      require_same_shape(call, "output", *args.output, "gradOutput", *args.grad_output);
      const Shape& shape = args.output->shape();
      if (shape.rank < 1) call.fail("output must have rank 1 to 4, but " + describe("output", shape));
      float* grad = nullptr;
      Napi::Object result = call.output(shape, &grad);
      call.backend.softmax_backward({.grad_x = grad,
                                     .out = args.output->data(),
                                     .grad_out = args.grad_output->data(),
                                     .rows = leading_rows(shape),
                                     .d = shape.last()});
      return result;
    }};

// ---- embedding ----

// [sync] embedding({ weight, ids: Int32Array }): [ids.length, D] rows of weight [V, D]. Throws TypeError (ids not an
// Int32Array), RangeError (weight not rank 2, an id outside [0, V), naming its position and value).
struct EmbeddingArgs {
  TensorHandle* weight;
  IntArray ids;
};

const OpSpec<EmbeddingArgs> kEmbedding{
    "embedding",
    Runs::kAny,
    kernel<&ops::Backend::embedding>,
    {tensor<&EmbeddingArgs::weight>("weight"), int32_array<&EmbeddingArgs::ids>("ids")},
    nullptr,
    [](const Call& call, EmbeddingArgs& args) -> Napi::Value {
      const Shape& shape = args.weight->shape();
      if (shape.rank != 2) call.fail("expected weight of rank 2 [vocab, dim], but " + describe("weight", shape));
      check_indices(call, "ids", args.ids, shape[0], "the vocabulary size, weight's first dim");
      float* out = nullptr;
      Napi::Object result = call.output(shape_of({args.ids.length, shape[1]}, "output"), &out);
      call.backend.embedding(
          {.out = out, .weight = args.weight->data(), .ids = args.ids.data, .n = args.ids.length, .d = shape[1]});
      return result;
    }};

// [sync] embeddingBackward({ gradOutput, ids: Int32Array, vocabSize }): [vocabSize, D], the rows of gradOutput
// [..., D] (ids.length rows) added at their ids, deterministically. Throws TypeError, RangeError (shapes, ids,
// vocabSize; on the GPU, more than 2^31 − 1 ids).
struct EmbeddingBackwardArgs {
  TensorHandle* grad_output;
  IntArray ids;
  int64_t vocab_size;
};

const OpSpec<EmbeddingBackwardArgs> kEmbeddingBackward{
    "embeddingBackward",
    Runs::kAny,
    kernel<&ops::Backend::embedding_backward>,
    {tensor<&EmbeddingBackwardArgs::grad_output>("gradOutput"), int32_array<&EmbeddingBackwardArgs::ids>("ids"),
     integer<&EmbeddingBackwardArgs::vocab_size>("vocabSize", 1, kMaxInt32)},
    nullptr,
    [](const Call& call, EmbeddingBackwardArgs& args) -> Napi::Value {
      const Shape& shape = args.grad_output->shape();
      if (shape.rank < 2 || leading_rows(shape) != args.ids.length) {
        call.fail("expected gradOutput of shape [" + std::to_string(args.ids.length) + ", dim] (one row per id), but " +
                  describe("gradOutput", shape) + " and ids has length " + std::to_string(args.ids.length));
      }
      check_indices(call, "ids", args.ids, args.vocab_size, "vocabSize");
      const int64_t d = shape.last();
      float* grad_weight = nullptr;
      Napi::Object result = call.output(shape_of({args.vocab_size, d}, "vocabSize"), &grad_weight);
      call.backend.embedding_backward({.grad_weight = grad_weight,
                                       .grad_out = args.grad_output->data(),
                                       .ids = args.ids.data,
                                       .n = args.ids.length,
                                       .v = args.vocab_size,
                                       .d = d});
      return result;
    }};

// [sync] permute0213({ x [a, b, c, d] }): [a, c, b, d] (splitting and merging attention heads). Throws TypeError,
// RangeError (x not of rank 4).
const OpSpec<UnaryArgs> kPermute0213{
    "permute0213",
    Runs::kAny,
    kernel<&ops::Backend::permute0213>,
    {tensor<&UnaryArgs::x>("x")},
    nullptr,
    [](const Call& call, UnaryArgs& args) -> Napi::Value {
      const Shape& shape = args.x->shape();
      if (shape.rank != 4) call.fail("expected x of rank 4, but " + describe("x", shape));
      float* out = nullptr;
      Napi::Object result = call.output(shape_of({shape[0], shape[2], shape[1], shape[3]}, "output"), &out);
      call.backend.permute0213(
          {.out = out, .x = args.x->data(), .a = shape[0], .b = shape[1], .c = shape[2], .d = shape[3]});
      return result;
    }};

// ---- losses ----

struct CrossEntropyArgs {
  TensorHandle* logits;
  IntArray labels;
  int32_t ignore_index;
  float grad_loss;
};

void check_classification(const Call& call, CrossEntropyArgs& args) {
  const Shape& shape = args.logits->shape();
  if (shape.rank != 2 || shape[1] < 1) {
    call.fail("expected logits of shape [rows, classes] with classes >= 1, but " + describe("logits", shape));
  }
  if (args.labels.length != shape[0]) {
    call.fail("labels must hold one label per row of logits, but labels has length " +
              std::to_string(args.labels.length) + " and " + describe("logits", shape));
  }
  check_indices(call, "labels", args.labels, shape[1], "the number of classes", &args.ignore_index);
}

// [sync] crossEntropy({ logits [N, C], labels: Int32Array (N), ignoreIndex }): rank-0 tensor, the mean over rows
// whose label is not ignoreIndex of −log softmax(logits)[label]; 0 when every row is ignored. Throws TypeError,
// RangeError (shapes, a label outside [0, C) that is not ignoreIndex, naming its position and value).
const OpSpec<CrossEntropyArgs> kCrossEntropy{
    "crossEntropy",
    Runs::kAny,
    kernel<&ops::Backend::cross_entropy>,
    {tensor<&CrossEntropyArgs::logits>("logits"), int32_array<&CrossEntropyArgs::labels>("labels"),
     integer<&CrossEntropyArgs::ignore_index>("ignoreIndex", -kMaxInt32 - 1, kMaxInt32)},
    check_classification,
    [](const Call& call, CrossEntropyArgs& args) -> Napi::Value {
      float* loss = nullptr;
      Napi::Object result = call.output(Shape(), &loss);
      call.backend.cross_entropy({.loss = loss,
                                  .logits = args.logits->data(),
                                  .labels = args.labels.data,
                                  .rows = args.logits->shape()[0],
                                  .classes = args.logits->shape()[1],
                                  .ignore_index = args.ignore_index});
      return result;
    }};

// [sync] crossEntropyBackward({ logits, labels, ignoreIndex, gradLoss }): dLogits [N, C] = gradLoss ·
// (softmax − onehot) / counted rows, zero rows where ignored. Throws as crossEntropy, and RangeError (gradLoss not
// finite).
const OpSpec<CrossEntropyArgs> kCrossEntropyBackward{
    "crossEntropyBackward",
    Runs::kAny,
    kernel<&ops::Backend::cross_entropy_backward>,
    {tensor<&CrossEntropyArgs::logits>("logits"), int32_array<&CrossEntropyArgs::labels>("labels"),
     integer<&CrossEntropyArgs::ignore_index>("ignoreIndex", -kMaxInt32 - 1, kMaxInt32),
     number<&CrossEntropyArgs::grad_loss>("gradLoss")},
    check_classification,
    [](const Call& call, CrossEntropyArgs& args) -> Napi::Value {
      float* grad = nullptr;
      Napi::Object result = call.output(args.logits->shape(), &grad);
      call.backend.cross_entropy_backward({.grad_logits = grad,
                                           .logits = args.logits->data(),
                                           .labels = args.labels.data,
                                           .rows = args.logits->shape()[0],
                                           .classes = args.logits->shape()[1],
                                           .ignore_index = args.ignore_index,
                                           .grad_loss = args.grad_loss});
      return result;
    }};

// [sync] mseLoss({ prediction, target }): rank-0 tensor, the mean of squared differences (0 when empty).
// [sync] mseLossBackward({ prediction, target, gradLoss }): 2 · gradLoss · (prediction − target) / n.
// Throw TypeError (devices differ), RangeError (shapes differ, gradLoss not finite).
struct MseArgs {
  TensorHandle *prediction, *target;
  float grad_loss;
};

void check_mse(const Call& call, MseArgs& args) {
  require_same_shape(call, "prediction", *args.prediction, "target", *args.target);
}

const OpSpec<MseArgs> kMseLoss{"mseLoss",
                               Runs::kAny,
                               kernel<&ops::Backend::mse_loss>,
                               {tensor<&MseArgs::prediction>("prediction"), tensor<&MseArgs::target>("target")},
                               check_mse,
                               [](const Call& call, MseArgs& args) -> Napi::Value {
                                 float* loss = nullptr;
                                 Napi::Object result = call.output(Shape(), &loss);
                                 call.backend.mse_loss({.loss = loss,
                                                        .prediction = args.prediction->data(),
                                                        .target = args.target->data(),
                                                        .n = args.prediction->numel()});
                                 return result;
                               }};

const OpSpec<MseArgs> kMseLossBackward{"mseLossBackward",
                                       Runs::kAny,
                                       kernel<&ops::Backend::mse_loss_backward>,
                                       {tensor<&MseArgs::prediction>("prediction"), tensor<&MseArgs::target>("target"),
                                        number<&MseArgs::grad_loss>("gradLoss")},
                                       check_mse,
                                       [](const Call& call, MseArgs& args) -> Napi::Value {
                                         float* grad = nullptr;
                                         Napi::Object result = call.output(args.prediction->shape(), &grad);
                                         call.backend.mse_loss_backward({.grad_prediction = grad,
                                                                         .prediction = args.prediction->data(),
                                                                         .target = args.target->data(),
                                                                         .n = args.prediction->numel(),
                                                                         .grad_loss = args.grad_loss});
                                         return result;
                                       }};

// [sync] bceWithLogits({ logits, targets }): rank-0 tensor, the mean over every element of max(z, 0) − z·y +
// log(1 + exp(−|z|)) (PyTorch's BCEWithLogitsLoss; 0 when empty). targets are probabilities, 0 or 1 for multi-label.
// [sync] bceWithLogitsBackward({ logits, targets, gradLoss }): gradLoss · (σ(logits) − targets) / n.
// Throw TypeError (devices differ), RangeError (shapes differ, gradLoss not finite).
struct BceArgs {
  TensorHandle *logits, *targets;
  float grad_loss;
};

void check_bce(const Call& call, BceArgs& args) {
  require_same_shape(call, "logits", *args.logits, "targets", *args.targets);
}

const OpSpec<BceArgs> kBceWithLogits{
    "bceWithLogits",
    Runs::kAny,
    kernel<&ops::Backend::bce_with_logits>,
    {tensor<&BceArgs::logits>("logits"), tensor<&BceArgs::targets>("targets")},
    check_bce,
    [](const Call& call, BceArgs& args) -> Napi::Value {
      float* loss = nullptr;
      Napi::Object result = call.output(Shape(), &loss);
      call.backend.bce_with_logits(
          {.loss = loss, .logits = args.logits->data(), .targets = args.targets->data(), .n = args.logits->numel()});
      return result;
    }};

const OpSpec<BceArgs> kBceWithLogitsBackward{
    "bceWithLogitsBackward",
    Runs::kAny,
    kernel<&ops::Backend::bce_with_logits_backward>,
    {tensor<&BceArgs::logits>("logits"), tensor<&BceArgs::targets>("targets"), number<&BceArgs::grad_loss>("gradLoss")},
    check_bce,
    [](const Call& call, BceArgs& args) -> Napi::Value {
      float* grad = nullptr;
      Napi::Object result = call.output(args.logits->shape(), &grad);
      call.backend.bce_with_logits_backward({.grad_logits = grad,
                                             .logits = args.logits->data(),
                                             .targets = args.targets->data(),
                                             .n = args.logits->numel(),
                                             .grad_loss = args.grad_loss});
      return result;
    }};

// ---- rotary position embeddings ----

// [sync] rotary({ x [batch, heads, seq, d], positions: Int32Array (batch·seq), base, inverse }): x with each (token,
// head) row's pairs (x_i, x_{i+d/2}) turned by positions[b, s] · base^(−2i/d) radians (transformers' rotate_half
// layout); inverse turns them back, which is the gradient. Throws TypeError (not a tensor, not an Int32Array),
// RangeError (x not rank 4 or d odd, positions of the wrong length or negative, base not above 1).
struct RotaryArgs {
  TensorHandle* x;
  IntArray positions;
  float base;
  bool inverse;
};

void check_rotary(const Call& call, RotaryArgs& args) {
  const Shape& shape = args.x->shape();
  if (shape.rank != 4 || shape[3] % 2 != 0) {
    call.fail("x must be [batch, heads, seq, d] with an even d, but " + describe("x", shape));
  }
  if (args.positions.length != shape[0] * shape[2]) {
    call.fail("positions must hold one position per token (batch · seq = " + std::to_string(shape[0] * shape[2]) +
              "), but has length " + std::to_string(args.positions.length));
  }
  check_indices(call, "positions", args.positions, kMaxInt32, "a non-negative position");
  if (!(args.base > 1.0f)) call.fail("base must be above 1, got " + std::to_string(args.base));
}

const OpSpec<RotaryArgs> kRotary{
    "rotary",
    Runs::kAny,
    kernel<&ops::Backend::rotary>,
    {tensor<&RotaryArgs::x>("x"), int32_array<&RotaryArgs::positions>("positions"),
     number<&RotaryArgs::base>("base", kPositive), boolean<&RotaryArgs::inverse>("inverse")},
    check_rotary,
    [](const Call& call, RotaryArgs& args) -> Napi::Value {
      const Shape& shape = args.x->shape();
      float* out = nullptr;
      Napi::Object result = call.output(shape, &out);
      call.backend.rotary({.out = out,
                           .x = args.x->data(),
                           .positions = args.positions.data,
                           .batch = shape[0],
                           .heads = shape[1],
                           .seq = shape[2],
                           .d = shape[3],
                           .base = args.base,
                           .inverse = args.inverse});
      return result;
    }};

// ---- dropout ----

// [sync] dropout({ x, p, seed }): x ⊙ keep / (1 − p), keep_i drawn from (seed, i) alone, so the same seed and size
// give the same mask: backward calls dropout(gradOutput, p, seed). p in [0, 1] (1 drops everything); seed an integer
// from 0 to 2^53 − 1. The same mask on both devices. Throws TypeError, RangeError (p or seed out of range).
struct DropoutArgs {
  TensorHandle* x;
  float p;
  uint64_t seed;
};

const OpSpec<DropoutArgs> kDropout{
    "dropout",
    Runs::kAny,
    kernel<&ops::Backend::dropout>,
    {tensor<&DropoutArgs::x>("x"), number<&DropoutArgs::p>("p", closed(0, 1)),
     integer<&DropoutArgs::seed>("seed", 0, kMaxSafeInteger)},
    nullptr,
    [](const Call& call, DropoutArgs& args) -> Napi::Value {
      float* out = nullptr;
      Napi::Object result = call.output(args.x->shape(), &out);
      call.backend.dropout({.out = out, .x = args.x->data(), .n = args.x->numel(), .p = args.p, .seed = args.seed});
      return result;
    }};

}  // namespace

void register_nn(Napi::Env env, Napi::Object exports) {
  for (const auto* spec : {&kGelu, &kRelu, &kTanh}) register_op(env, exports, *spec);
  for (const auto* spec : {&kGeluBackward, &kReluBackward, &kTanhBackward}) register_op(env, exports, *spec);
  register_op(env, exports, kLayerNorm);
  register_op(env, exports, kLayerNormBackward);
  register_op(env, exports, kSoftmax);
  register_op(env, exports, kSoftmaxBackward);
  register_op(env, exports, kEmbedding);
  register_op(env, exports, kEmbeddingBackward);
  register_op(env, exports, kPermute0213);
  register_op(env, exports, kCrossEntropy);
  register_op(env, exports, kCrossEntropyBackward);
  register_op(env, exports, kMseLoss);
  register_op(env, exports, kMseLossBackward);
  register_op(env, exports, kBceWithLogits);
  register_op(env, exports, kBceWithLogitsBackward);
  register_op(env, exports, kRotary);
  register_op(env, exports, kDropout);
}

}  // namespace bidora::binding
