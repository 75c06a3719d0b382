// The optimizer kernels over tensor lists and the orthogonality regulariser, declared with op.h. Every list op
// updates its first list in place (one call for the whole list): lists must have equal lengths and pairwise equal
// shapes, and the dispatcher refuses a written tensor that shares storage with any other. Throw TypeError (not an
// array of live tensors, tensors on different devices, not a number) and RangeError (lengths, shapes, shared storage,
// scalars out of range).
#include "op.h"

namespace bidora::binding {

namespace {

// [sync] adamwStep({ params, grads, expAvg, expAvgSq, lr, beta1, beta2, eps, weightDecay, step }): void - one AdamW
// update (PyTorch's rule, ../common/optim_math.h) of every params[i] with its moments (zeros before the first step);
// step: the update's number, 1 first; lr, eps, weightDecay ≥ 0, beta1 and beta2 in [0, 1).
struct AdamwArgs {
  TensorList params, grads, exp_avg, exp_avg_sq;
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step;
};

const OpSpec<AdamwArgs> kAdamw(
    "adamwStep", Runs::kAny, kernel<&ops::Backend::adamw_step>,
    {arg<&AdamwArgs::params>("params", kWritten), arg<&AdamwArgs::grads>("grads"),
     arg<&AdamwArgs::exp_avg>("expAvg", kWritten), arg<&AdamwArgs::exp_avg_sq>("expAvgSq", kWritten),
     arg<&AdamwArgs::lr>("lr", kNonNegative), arg<&AdamwArgs::beta1>("beta1", half_open(0, 1)),
     arg<&AdamwArgs::beta2>("beta2", half_open(0, 1)), arg<&AdamwArgs::eps>("eps", kNonNegative),
     arg<&AdamwArgs::weight_decay>("weightDecay", kNonNegative),
     arg<&AdamwArgs::step>("step", closed(1, kMaxSafeInteger))},
    [](const char* fn, AdamwArgs& args) {
      rules::paired(fn, "params", args.params.shapes, "grads", args.grads.shapes);
      rules::paired(fn, "params", args.params.shapes, "expAvg", args.exp_avg.shapes);
      rules::paired(fn, "params", args.params.shapes, "expAvgSq", args.exp_avg_sq.shapes);
    },
    [](const Call& call, AdamwArgs& args) -> Napi::Value {
      call.backend.adamw_step({.params = args.params.data.data(),
                               .exp_avgs = args.exp_avg.data.data(),
                               .exp_avg_sqs = args.exp_avg_sq.data.data(),
                               .grads = args.grads.read(),
                               .lengths = args.params.lengths.data(),
                               .count = args.params.count(),
                               .lr = args.lr,
                               .beta1 = args.beta1,
                               .beta2 = args.beta2,
                               .eps = args.eps,
                               .weight_decay = args.weight_decay,
                               .step = args.step});
      return call.env.Undefined();
    });

// [sync] sgdStep({ params, grads, momentumBuffers?, lr, momentum, weightDecay, nesterov? }): void - one SGD update
// (PyTorch's rule, dampening 0). momentumBuffers start at zero and are required when momentum ≠ 0; nesterov requires
// momentum > 0.
struct SgdArgs {
  TensorList params, grads, buffers;
  double lr, momentum, weight_decay;
  bool nesterov = false;
};

const OpSpec<SgdArgs> kSgd(
    "sgdStep", Runs::kAny, kernel<&ops::Backend::sgd_step>,
    {arg<&SgdArgs::params>("params", kWritten), arg<&SgdArgs::grads>("grads"),
     arg<&SgdArgs::buffers>("momentumBuffers", kOptionalWritten), arg<&SgdArgs::lr>("lr", kNonNegative),
     arg<&SgdArgs::momentum>("momentum", kNonNegative), arg<&SgdArgs::weight_decay>("weightDecay", kNonNegative),
     arg<&SgdArgs::nesterov>("nesterov")},
    [](const char* fn, SgdArgs& args) {
      if (args.nesterov && args.momentum == 0)
        throw RangeError(std::string(fn) + ": nesterov needs a non-zero momentum");
      if (args.momentum != 0 && !args.buffers.present) {
        throw bidora::TypeError(std::string(fn) + ": momentumBuffers must be an array of Tensors when momentum is " +
                                rules::format(args.momentum));
      }
      rules::paired(fn, "params", args.params.shapes, "grads", args.grads.shapes);
      if (args.buffers.present) rules::paired(fn, "params", args.params.shapes, "momentumBuffers", args.buffers.shapes);
    },
    [](const Call& call, SgdArgs& args) -> Napi::Value {
      call.backend.sgd_step({.params = args.params.data.data(),
                             .momentum_buffers = args.buffers.present ? args.buffers.data.data() : nullptr,
                             .grads = args.grads.read(),
                             .lengths = args.params.lengths.data(),
                             .count = args.params.count(),
                             .lr = args.lr,
                             .momentum = args.momentum,
                             .weight_decay = args.weight_decay,
                             .nesterov = args.nesterov});
      return call.env.Undefined();
    });

// [sync] axpyList({ ys, alpha, xs }): void - ys[i] += alpha · xs[i]. scaleList({ tensors, factor }): void -
// tensors[i] *= factor. combineHypergradient({ direct, plus, minus, factor }): void - direct[i] −= factor · (plus[i] −
// minus[i]) (BiDoRA's g − ξ (g⁺ − g⁻) / (2ε) with factor = ξ / (2ε)).
struct ListArgs {
  TensorList target, first, second;
  float factor;
};

const OpSpec<ListArgs> kAxpyList(
    "axpyList", Runs::kAny, kernel<&ops::Backend::axpy_list>,
    {arg<&ListArgs::target>("ys", kWritten), arg<&ListArgs::factor>("alpha"), arg<&ListArgs::first>("xs")},
    [](const char* fn, ListArgs& args) { rules::paired(fn, "ys", args.target.shapes, "xs", args.first.shapes); },
    [](const Call& call, ListArgs& args) -> Napi::Value {
      const TensorList& ys = args.target;
      call.backend.axpy_list({ys.data.data(), args.first.read(), ys.lengths.data(), ys.count(), args.factor});
      return call.env.Undefined();
    });

const OpSpec<ListArgs> kScaleList("scaleList", Runs::kAny, kernel<&ops::Backend::scale_list>,
                                  {arg<&ListArgs::target>("tensors", kWritten), arg<&ListArgs::factor>("factor")},
                                  nullptr, [](const Call& call, ListArgs& args) -> Napi::Value {
                                    const TensorList& t = args.target;
                                    call.backend.scale_list({t.data.data(), t.lengths.data(), t.count(), args.factor});
                                    return call.env.Undefined();
                                  });

const OpSpec<ListArgs> kCombine(
    "combineHypergradient", Runs::kAny, kernel<&ops::Backend::combine_hypergradient>,
    {arg<&ListArgs::target>("direct", kWritten), arg<&ListArgs::first>("plus"), arg<&ListArgs::second>("minus"),
     arg<&ListArgs::factor>("factor")},
    [](const char* fn, ListArgs& args) {
      rules::paired(fn, "direct", args.target.shapes, "plus", args.first.shapes);
      rules::paired(fn, "direct", args.target.shapes, "minus", args.second.shapes);
    },
    [](const Call& call, ListArgs& args) -> Napi::Value {
      const TensorList& d = args.target;
      call.backend.combine_hypergradient({.direct = d.data.data(),
                                          .plus = args.first.read(),
                                          .minus = args.second.read(),
                                          .lengths = d.lengths.data(),
                                          .count = d.count(),
                                          .factor = args.factor});
      return call.env.Undefined();
    });

// [sync] orthogonalityPenalty({ weight, weightGram, loraA, loraB, scale, eps, computeGradients? })
//   -> { value: number, gradA?: [R,K], gradB?: [M,R] }
// BiDoRA's F = ||D Dᵀ − I||_F for D the row-normalised W0 + s B A (norms floored at eps > 0) and dF/dA, dF/dB
// (unless computeGradients is false), from weight W0 [M,K], weightGram = W0 W0ᵀ [M,M], loraA [R,K], loraB [M,R];
// never forms an [M,K] matrix. CPU only (lib/ops/regularizer.ts serves GPU layers).
struct PenaltyArgs {
  TensorHandle *weight, *weight_gram, *lora_a, *lora_b;
  float scale, eps;
  bool compute_gradients = true;
  ops::AdapterDims dims;
};

const OpSpec<PenaltyArgs> kPenalty(
    "orthogonalityPenalty", Runs::kCpu, kernel<&ops::Backend::orthogonality_penalty>,
    {arg<&PenaltyArgs::weight>("weight"), arg<&PenaltyArgs::weight_gram>("weightGram"),
     arg<&PenaltyArgs::lora_a>("loraA"), arg<&PenaltyArgs::lora_b>("loraB"), arg<&PenaltyArgs::scale>("scale"),
     arg<&PenaltyArgs::eps>("eps", kPositive), arg<&PenaltyArgs::compute_gradients>("computeGradients")},
    [](const char* fn, PenaltyArgs& args) {
      args.dims = rules::penalty(fn, args.weight->shape(), args.weight_gram->shape(), args.lora_a->shape(),
                                 args.lora_b->shape());
    },
    [](const Call& call, PenaltyArgs& args) -> Napi::Value {
      float *grad_a = nullptr, *grad_b = nullptr;
      Napi::Object result =
          args.compute_gradients
              ? call.outputs({{"gradA", args.lora_a->shape(), &grad_a}, {"gradB", args.lora_b->shape(), &grad_b}})
              : Napi::Object::New(call.env);
      double value = 0;
      call.backend.orthogonality_penalty({.value = &value,
                                          .grad_lora_a = grad_a,
                                          .grad_lora_b = grad_b,
                                          .weight = args.weight->data(),
                                          .weight_gram = args.weight_gram->data(),
                                          .lora_a = args.lora_a->data(),
                                          .lora_b = args.lora_b->data(),
                                          .m = args.dims.m,
                                          .k = args.dims.k,
                                          .r = args.dims.r,
                                          .scale = args.scale,
                                          .eps = args.eps});
      result.Set("value", Napi::Number::New(call.env, value));
      return result;
    });

}  // namespace

void register_optim(Napi::Env env, Napi::Object exports) {
  register_ops(env, exports, kAdamw, kSgd, kAxpyList, kScaleList, kCombine, kPenalty);
}

}  // namespace bidora::binding
