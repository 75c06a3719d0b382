// The optimizer kernels over tensor lists and the orthogonality regulariser, declared with op.h (lib/binding.ts
// documents each). Every list op updates its first list in place (one call for the whole list): lists must have equal
// lengths and pairwise equal shapes, and the dispatcher refuses a written tensor that shares storage with any other.
#include "op.h"

namespace bidora::binding {

namespace {

struct StepArgs {
  TensorList params, grads, exp_avg, exp_avg_sq;  // exp_avg: SGD's momentum buffers
  double lr, beta1, beta2, eps, momentum, weight_decay;
  int64_t step;
  bool nesterov = false;
};
using S = StepArgs;

Field<S> weight_decay() { return arg<&S::weight_decay>("weightDecay", kNonNegative); }

const OpSpec<S> kAdamw(
    "adamwStep", Runs::kAny, kernel<&ops::Backend::adamw_step>,
    {arg<&S::params>("params", kWritten), arg<&S::grads>("grads"), arg<&S::exp_avg>("expAvg", kWritten),
     arg<&S::exp_avg_sq>("expAvgSq", kWritten), arg<&S::lr>("lr", kNonNegative),
     arg<&S::beta1>("beta1", half_open(0, 1)), arg<&S::beta2>("beta2", half_open(0, 1)),
     arg<&S::eps>("eps", kNonNegative), weight_decay(), arg<&S::step>("step", closed(1, kMaxSafeInteger))},
    [](const char* fn, S& args) {
      rules::paired(fn, "params", args.params.shapes, "grads", args.grads.shapes);
      rules::paired(fn, "params", args.params.shapes, "expAvg", args.exp_avg.shapes);
      rules::paired(fn, "params", args.params.shapes, "expAvgSq", args.exp_avg_sq.shapes);
    },
    [](const Call& call, S& args) {
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
    });
const OpSpec<S> kSgd(
    "sgdStep", Runs::kAny, kernel<&ops::Backend::sgd_step>,
    {arg<&S::params>("params", kWritten), arg<&S::grads>("grads"),
     arg<&S::exp_avg>("momentumBuffers", kOptionalWritten), arg<&S::lr>("lr", kNonNegative),
     arg<&S::momentum>("momentum", kNonNegative), weight_decay(), arg<&S::nesterov>("nesterov")},
    [](const char* fn, S& args) {
      rules::sgd(fn, args.momentum, args.nesterov, args.params.shapes, args.grads.shapes,
                 args.exp_avg.present ? &args.exp_avg.shapes : nullptr);
    },
    [](const Call& call, S& args) {
      call.backend.sgd_step({.params = args.params.data.data(),
                             .momentum_buffers = args.exp_avg.present ? args.exp_avg.data.data() : nullptr,
                             .grads = args.grads.read(),
                             .lengths = args.params.lengths.data(),
                             .count = args.params.count(),
                             .lr = args.lr,
                             .momentum = args.momentum,
                             .weight_decay = args.weight_decay,
                             .nesterov = args.nesterov});
    });

struct ListArgs {
  TensorList target, first, second;
  float factor;
};
using T = ListArgs;

const OpSpec<T> kAxpyList(
    "axpyList", Runs::kAny, kernel<&ops::Backend::axpy_list>,
    {arg<&T::target>("ys", kWritten), arg<&T::factor>("alpha"), arg<&T::first>("xs")},
    [](const char* fn, T& args) { rules::paired(fn, "ys", args.target.shapes, "xs", args.first.shapes); },
    [](const Call& call, T& args) {
      const TensorList& ys = args.target;
      call.backend.axpy_list({ys.data.data(), args.first.read(), ys.lengths.data(), ys.count(), args.factor});
    });
const OpSpec<T> kScaleList("scaleList", Runs::kAny, kernel<&ops::Backend::scale_list>,
                           {arg<&T::target>("tensors", kWritten), arg<&T::factor>("factor")}, nullptr,
                           [](const Call& call, T& args) {
                             const TensorList& t = args.target;
                             call.backend.scale_list({t.data.data(), t.lengths.data(), t.count(), args.factor});
                           });
const OpSpec<T> kCombine(
    "combineHypergradient", Runs::kAny, kernel<&ops::Backend::combine_hypergradient>,
    {arg<&T::target>("direct", kWritten), arg<&T::first>("plus"), arg<&T::second>("minus"), arg<&T::factor>("factor")},
    [](const char* fn, T& args) {
      rules::paired(fn, "direct", args.target.shapes, "plus", args.first.shapes);
      rules::paired(fn, "direct", args.target.shapes, "minus", args.second.shapes);
    },
    [](const Call& call, T& args) {
      const TensorList& d = args.target;
      call.backend.combine_hypergradient({.direct = d.data.data(),
                                          .plus = args.first.read(),
                                          .minus = args.second.read(),
                                          .lengths = d.lengths.data(),
                                          .count = d.count(),
                                          .factor = args.factor});
    });

// [sync] orthogonalityPenalty -> { value: number, gradA?, gradB? }, CPU only (lib/ops/regularizer.ts serves GPUs).
struct PenaltyArgs {
  TensorHandle *weight, *weight_gram, *lora_a, *lora_b;
  float scale, eps;
  bool compute_gradients = true;
  ops::AdapterDims dims;
};
using P = PenaltyArgs;

const OpSpec<P> kPenalty(
    "orthogonalityPenalty", Runs::kCpu, kernel<&ops::Backend::orthogonality_penalty>,
    {arg<&P::weight>("weight"), arg<&P::weight_gram>("weightGram"), arg<&P::lora_a>("loraA"), arg<&P::lora_b>("loraB"),
     arg<&P::scale>("scale"), arg<&P::eps>("eps", kPositive), arg<&P::compute_gradients>("computeGradients")},
    [](const char* fn, P& args) {
      args.dims = rules::penalty(fn, args.weight->shape(), args.weight_gram->shape(), args.lora_a->shape(),
                                 args.lora_b->shape());
    },
    [](const Call& call, P& args) -> Napi::Value {
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

}  // namespace bidora::binding
