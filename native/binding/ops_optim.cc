// The optimizer kernels over tensor lists, the collectives of data-parallel training (native/mpi) and the
// orthogonality regulariser, declared with op.h (lib/binding.ts documents each). Every list op updates its first list
// in place (one call for the whole list): lists must have equal lengths and pairwise equal shapes, and the dispatcher
// refuses a written tensor that shares storage with any other.
#include "../mpi/communicator.h"
#include "op.h"

namespace bidora::binding {

namespace {

// Every argument an optimizer op takes; each op declares the ones it reads.
struct OptimArgs {
  TensorList params, grads, exp_avg, exp_avg_sq;  // exp_avg: SGD's momentum buffers
  TensorList target, first, second;               // the list ops': the written list first
  TensorHandle *weight, *weight_gram, *lora_a, *lora_b;
  double lr, beta1, beta2, eps, momentum, weight_decay, timeout;
  std::string collective;
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
    [](const char* fn, S& op) {
      rules::paired(fn, "params", op.params.shapes, "grads", op.grads.shapes);
      rules::paired(fn, "params", op.params.shapes, "expAvg", op.exp_avg.shapes);
      rules::paired(fn, "params", op.params.shapes, "expAvgSq", op.exp_avg_sq.shapes);
    },
    [](const Call& call, S& op) {
      call.backend.adamw_step({.params = op.params.data.data(),
                               .exp_avgs = op.exp_avg.data.data(),
                               .exp_avg_sqs = op.exp_avg_sq.data.data(),
                               .grads = op.grads.read(),
                               .lengths = op.params.lengths.data(),
                               .count = op.params.count(),
                               .lr = op.lr,
                               .beta1 = op.beta1,
                               .beta2 = op.beta2,
                               .eps = op.eps,
                               .weight_decay = op.weight_decay,
                               .step = op.step});
    });
const OpSpec<S> kSgd(
    "sgdStep", Runs::kAny, kernel<&ops::Backend::sgd_step>,
    {arg<&S::params>("params", kWritten), arg<&S::grads>("grads"),
     arg<&S::exp_avg>("momentumBuffers", kOptionalWritten), arg<&S::lr>("lr", kNonNegative),
     arg<&S::momentum>("momentum", kNonNegative), weight_decay(), arg<&S::nesterov>("nesterov")},
    [](const char* fn, S& op) {
      rules::sgd(fn, op.momentum, op.nesterov, op.params.shapes, op.grads.shapes,
                 op.exp_avg.present ? &op.exp_avg.shapes : nullptr);
    },
    [](const Call& call, S& op) {
      call.backend.sgd_step({.params = op.params.data.data(),
                             .momentum_buffers = op.exp_avg.present ? op.exp_avg.data.data() : nullptr,
                             .grads = op.grads.read(),
                             .lengths = op.params.lengths.data(),
                             .count = op.params.count(),
                             .lr = op.lr,
                             .momentum = op.momentum,
                             .weight_decay = op.weight_decay,
                             .nesterov = op.nesterov});
    });

const OpSpec<S> kAxpyList(
    "axpyList", Runs::kAny, kernel<&ops::Backend::axpy_list>,
    {arg<&S::target>("ys", kWritten), arg<&S::factor>("alpha"), arg<&S::first>("xs")},
    [](const char* fn, S& op) { rules::paired(fn, "ys", op.target.shapes, "xs", op.first.shapes); },
    [](const Call& call, S& op) {
      const TensorList& ys = op.target;
      call.backend.axpy_list({ys.data.data(), op.first.read(), ys.lengths.data(), ys.count(), op.factor});
    });
const OpSpec<S> kScaleList("scaleList", Runs::kAny, kernel<&ops::Backend::scale_list>,
                           {arg<&S::target>("tensors", kWritten), arg<&S::factor>("factor")}, nullptr,
                           [](const Call& call, S& op) {
                             const TensorList& t = op.target;
                             call.backend.scale_list({t.data.data(), t.lengths.data(), t.count(), op.factor});
                           });
const OpSpec<S> kCombine(
    "combineHypergradient", Runs::kAny, kernel<&ops::Backend::combine_hypergradient>,
    {arg<&S::target>("direct", kWritten), arg<&S::first>("plus"), arg<&S::second>("minus"), arg<&S::factor>("factor")},
    [](const char* fn, S& op) {
      rules::paired(fn, "direct", op.target.shapes, "plus", op.first.shapes);
      rules::paired(fn, "direct", op.target.shapes, "minus", op.second.shapes);
    },
    [](const Call& call, S& op) {
      const TensorList& d = op.target;
      call.backend.combine_hypergradient({.direct = d.data.data(),
                                          .plus = op.first.read(),
                                          .minus = op.second.read(),
                                          .lengths = d.lengths.data(),
                                          .count = d.count(),
                                          .factor = op.factor});
    });

const OpSpec<S> kMpi("mpi", Runs::kCpu, nullptr,
                     {arg<&S::collective>("collective"), arg<&S::target>("tensors", kWritten),
                      arg<&S::timeout>("timeout", kPositive)},
                     nullptr, [](const Call&, S& op) {
                       const TensorList& t = op.target;
                       mpi::collective(op.collective, t.data.data(), t.lengths.data(), t.count(), op.timeout);
                     });

// [sync] orthogonalityPenalty -> { value: number, gradA?, gradB? }, CPU only (lib/ops/regularizer.ts serves GPUs).
const OpSpec<S> kPenalty(
    "orthogonalityPenalty", Runs::kCpu, kernel<&ops::Backend::orthogonality_penalty>,
    {arg<&S::weight>("weight", kBf16), arg<&S::weight_gram>("weightGram"), arg<&S::lora_a>("loraA"),
     arg<&S::lora_b>("loraB"), arg<&S::scale>("scale"), arg<&S::norm_floor>("eps", kPositive),
     arg<&S::compute_gradients>("computeGradients")},
    [](const char* fn, S& op) {
      op.dims = rules::penalty(fn, op.weight->shape(), op.weight_gram->shape(), op.lora_a->shape(), op.lora_b->shape());
    },
    [](const Call& call, S& op) -> Napi::Value {
      float *grad_a = nullptr, *grad_b = nullptr;
      Napi::Object result = Napi::Object::New(call.env);
      if (op.compute_gradients) {
        result.Set("gradA", call.output(op.lora_a->shape(), &grad_a));
        result.Set("gradB", call.output(op.lora_b->shape(), &grad_b));
      }
      double value = 0;
      call.backend.orthogonality_penalty({.value = &value,
                                          .grad_lora_a = grad_a,
                                          .grad_lora_b = grad_b,
                                          .weight = op.weight->weight().f32,
                                          .weight_gram = op.weight_gram->data(),
                                          .lora_a = op.lora_a->data(),
                                          .lora_b = op.lora_b->data(),
                                          .m = op.dims.m,
                                          .k = op.dims.k,
                                          .r = op.dims.r,
                                          .scale = op.scale,
                                          .eps = op.norm_floor,
                                          .weight_bf16 = op.weight->weight().bf16});
      result.Set("value", Napi::Number::New(call.env, value));
      return result;
    });

}  // namespace

}  // namespace bidora::binding
