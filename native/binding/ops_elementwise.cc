// Elementwise arithmetic, axis reductions and ranges along an axis, declared with op.h (lib/binding.ts documents each).
// Each runs on its tensors' device and returns a fresh tensor there (axpy writes y in place). Throw TypeError and
// RangeError (shapes that do not fit, an axis or range out of bounds, a scalar not finite).
#include "op.h"

namespace bidora::binding {

namespace {

// Every argument an elementwise op takes; each op declares the ones it reads and its rule derives the rest.
struct ElementArgs {
  TensorHandle *a, *b;
  TensorList tensors;
  float alpha;
  int64_t period;
  Shape shape;
  std::optional<double> axis;
  double at, start, length;
  bool keep_dims = false;
  rules::Range range;  // sum and broadcastAxis use its split only
  float* out;
};
using E = ElementArgs;

template <ops::BinaryOp Op>
OpSpec<E> binary(const char* name) {
  return OpSpec<E>(
      name, Runs::kAny, kernel<&ops::Backend::binary>, {arg<&E::a>("a"), arg<&E::b>("b"), out<&E::out, &E::a>()},
      [](const char* fn, E& op) { op.period = rules::broadcast_period(fn, op.a->shape(), op.b->shape()); },
      [](const Call& call, E& op) {
        call.backend.binary({Op, op.out, op.a->data(), op.b->data(), op.a->numel(), op.period});
      });
}

const OpSpec<E> kAdd = binary<ops::BinaryOp::kAdd>("add");
const OpSpec<E> kSub = binary<ops::BinaryOp::kSub>("sub");
const OpSpec<E> kMul = binary<ops::BinaryOp::kMul>("mul");
const OpSpec<E> kScale("scale", Runs::kAny, kernel<&ops::Backend::scale>,
                       {arg<&E::a>("a"), arg<&E::alpha>("alpha"), out<&E::out, &E::a>()}, nullptr,
                       [](const Call& call, E& op) {
                         call.backend.scale({op.out, op.a->data(), op.a->numel(), op.alpha});
                       });
const OpSpec<E> kAxpy(
    "axpy", Runs::kAny, kernel<&ops::Backend::axpy>,
    {arg<&E::a>("y", kWritten), arg<&E::alpha>("alpha"), arg<&E::b>("x")},
    [](const char* fn, E& op) { rules::same_shape(fn, "y", op.a->shape(), "x", op.b->shape()); },
    [](const Call& call, E& op) {
      call.backend.axpy({.y = op.a->data(), .x = op.b->data(), .n = op.a->numel(), .alpha = op.alpha});
    });

// [sync] Along one axis: sum and its gradient broadcastAxis (over everything without an axis), narrow and its gradient.
const OpSpec<E> kSum(
    "sum", Runs::kAny, kernel<&ops::Backend::sum_axis>,
    {arg<&E::a>("a"), index<&E::axis>("axis"), arg<&E::keep_dims>("keepDims"), out<&E::out, &E::shape>()},
    [](const char* fn, E& op) {
      const rules::Reduction reduction = rules::reduction(fn, op.a->shape(), op.axis, op.keep_dims);
      op.range.split = reduction.split;
      op.shape = reduction.out;
    },
    [](const Call& call, E& op) {
      const rules::AxisSplit& s = op.range.split;
      call.backend.sum_axis({op.out, op.a->data(), s.outer, s.length, s.inner});
    });
const OpSpec<E> kBroadcastAxis(
    "broadcastAxis", Runs::kAny, kernel<&ops::Backend::broadcast_axis>,
    {arg<&E::a>("a"), arg<&E::shape>("shape"), index<&E::axis>("axis"), out<&E::out, &E::shape>()},
    [](const char* fn, E& op) { op.range.split = rules::broadcast(fn, op.a->shape(), op.shape, op.axis); },
    [](const Call& call, E& op) {
      const rules::AxisSplit& s = op.range.split;
      call.backend.broadcast_axis({op.out, op.a->data(), s.outer, s.length, s.inner});
    });

ops::Narrow narrow(const E& op) {
  const rules::Range& r = op.range;
  return {op.out, op.a->data(), r.split.outer, r.split.length, r.split.inner, r.start, r.length};
}

const OpSpec<E> kNarrow(
    "narrow", Runs::kAny, kernel<&ops::Backend::narrow>,
    {arg<&E::a>("a"), index<&E::at>("axis"), index<&E::start>("start"), index<&E::length>("length"),
     out<&E::out, &E::shape>()},
    [](const char* fn, E& op) {
      op.range = rules::narrow_range(fn, op.a->shape(), op.at, op.start, op.length);
      op.shape = op.range.narrowed;
    },
    [](const Call& call, E& op) { call.backend.narrow(narrow(op)); });
const OpSpec<E> kNarrowBackward(
    "narrowBackward", Runs::kAny, kernel<&ops::Backend::narrow_backward>,
    {arg<&E::a>("grad"), arg<&E::shape>("shape"), index<&E::at>("axis"), index<&E::start>("start"),
     out<&E::out, &E::shape>()},
    [](const char* fn, E& op) {
      op.range = rules::narrow_backward_range(fn, op.a->shape(), op.shape, op.at, op.start);
    },
    [](const Call& call, E& op) { call.backend.narrow_backward(narrow(op)); });

const OpSpec<E> kGlobalNorm(
    "globalNorm", Runs::kAny, kernel<&ops::Backend::global_norm>, {arg<&E::tensors>("tensors")}, nullptr,
    [](const Call& call, E& op) -> Napi::Value {
      double norm = 0;
      call.backend.global_norm({&norm, op.tensors.read(), op.tensors.lengths.data(), op.tensors.count()});
      return Napi::Number::New(call.env, norm);
    });

}  // namespace

}  // namespace bidora::binding
