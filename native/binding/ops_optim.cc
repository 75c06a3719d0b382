// The optimizer kernels over tensor lists and the orthogonality regulariser, declared with op.h (lib/binding.ts
// documents each). Every list op updates its first list in place (one call for the whole list): lists must have equal
// lengths and pairwise equal shapes, and the dispatcher refuses a written tensor that shares storage with any other.
#include "op.h"

namespace bidora::binding {

namespace {

// Every argument an optimizer op takes; each op declares the ones it reads.
struct OptimArgs {
  TensorList params, grads, exp_avg, exp_avg_sq;  // exp_avg: SGD's momentum buffers
  TensorList target, first, second;               // the list ops': the written list first
  TensorHandle *weight, *weight_gram, *lora_a, *lora_b;
  double lr, beta1, beta2, eps, momentum, weight_decay;
  float factor, scale, norm_floor;
  int64_t step;
  bool nesterov = false, compute_gradients = true;
  ops::AdapterDims dims;
};
using S = OptimArgs;

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

const OpSpec<S> kAxpyList(
    "axpyList", Runs::kAny, kernel<&ops::Backend::axpy_list>,
    {arg<&S::target>("ys", kWritten), arg<&S::factor>("alpha"), arg<&S::first>("xs")},
    [](const char* fn, S& args) { rules::paired(fn, "ys", args.target.shapes, "xs", args.first.shapes); },
    [](const Call& call, S& args) {
      const TensorList& ys = args.target;
      call.backend.axpy_list({ys.data.data(), args.first.read(), ys.lengths.data(), ys.count(), args.factor});
    });
const OpSpec<S> kScaleList("scaleList", Runs::kAny, kernel<&ops::Backend::scale_list>,
                           {arg<&S::target>("tensors", kWritten), arg<&S::factor>("factor")}, nullptr,
                           [](const Call& call, S& args) {
                             const TensorList& t = args.target;
                             call.backend.scale_list({t.data.data(), t.lengths.data(), t.count(), args.factor});
                           });
const OpSpec<S> kCombine(
    "combineHypergradient", Runs::kAny, kernel<&ops::Backend::combine_hypergradient>,
    {arg<&S::target>("direct", kWritten), arg<&S::first>("plus"), arg<&S::second>("minus"), arg<&S::factor>("factor")},
    [](const char* fn, S& args) {
      rules::paired(fn, "direct", args.target.shapes, "plus", args.first.shapes);
      rules::paired(fn, "direct", args.target.shapes, "minus", args.second.shapes);
    },
    [](const Call& call, S& args) {
      const TensorList& d = args.target;
      call.backend.combine_hypergradient({.direct = d.data.data(),
                                          .plus = args.first.read(),
                                          .minus = args.second.read(),
                                          .lengths = d.lengths.data(),
                                          .count = d.count(),
                                          .factor = args.factor});
    });

// [sync] orthogonalityPenalty -> { value: number, gradA?, gradB? }, CPU only (lib/ops/regularizer.ts serves GPUs).

const OpSpec<S> kPenalty(
    "orthogonalityPenalty", Runs::kCpu, kernel<&ops::Backend::orthogonality_penalty>,
    {arg<&S::weight>("weight"), arg<&S::weight_gram>("weightGram"), arg<&S::lora_a>("loraA"), arg<&S::lora_b>("loraB"),
     arg<&S::scale>("scale"), arg<&S::norm_floor>("eps", kPositive), arg<&S::compute_gradients>("computeGradients")},
    [](const char* fn, S& args) {
      args.dims = rules::penalty(fn, args.weight->shape(), args.weight_gram->shape(), args.lora_a->shape(),
                                 args.lora_b->shape());
    },
    [](const Call& call, S& args) -> Napi::Value {
      float *grad_a = nullptr, *grad_b = nullptr;
      Napi::Object result = Napi::Object::New(call.env);
      if (args.compute_gradients) {
        result.Set("gradA", call.output(args.lora_a->shape(), &grad_a));
        result.Set("gradB", call.output(args.lora_b->shape(), &grad_b));
      }
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
                                          .eps = args.norm_floor});
      result.Set("value", Napi::Number::New(call.env, value));
      return result;
    });

}  // namespace

}  // namespace bidora::binding
