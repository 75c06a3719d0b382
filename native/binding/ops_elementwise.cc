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
      [](const char* fn, E& args) { args.period = rules::broadcast_period(fn, args.a->shape(), args.b->shape()); },
      [](const Call& call, E& args) {
        call.backend.binary({Op, args.out, args.a->data(), args.b->data(), args.a->numel(), args.period});
      });
}

const OpSpec<E> kAdd = binary<ops::BinaryOp::kAdd>("add");
const OpSpec<E> kSub = binary<ops::BinaryOp::kSub>("sub");
const OpSpec<E> kMul = binary<ops::BinaryOp::kMul>("mul");
const OpSpec<E> kScale("scale", Runs::kAny, kernel<&ops::Backend::scale>,
                       {arg<&E::a>("a"), arg<&E::alpha>("alpha"), out<&E::out, &E::a>()}, nullptr,
                       [](const Call& call, E& args) {
                         call.backend.scale({args.out, args.a->data(), args.a->numel(), args.alpha});
                       });
const OpSpec<E> kAxpy(
    "axpy", Runs::kAny, kernel<&ops::Backend::axpy>,
    {arg<&E::a>("y", kWritten), arg<&E::alpha>("alpha"), arg<&E::b>("x")},
    [](const char* fn, E& args) { rules::same_shape(fn, "y", args.a->shape(), "x", args.b->shape()); },
    [](const Call& call, E& args) {
      call.backend.axpy({.y = args.a->data(), .x = args.b->data(), .n = args.a->numel(), .alpha = args.alpha});
    });

// [sync] Along one axis: sum and its gradient broadcastAxis (over everything without an axis), narrow and its gradient.

const OpSpec<E> kSum(
    "sum", Runs::kAny, kernel<&ops::Backend::sum_axis>,
    {arg<&E::a>("a"), index<&E::axis>("axis"), arg<&E::keep_dims>("keepDims"), out<&E::out, &E::shape>()},
    [](const char* fn, E& args) {
      const rules::Reduction reduction = rules::reduction(fn, args.a->shape(), args.axis, args.keep_dims);
      args.range.split = reduction.split;
      args.shape = reduction.out;
    },
    [](const Call& call, E& args) {
      const rules::AxisSplit& s = args.range.split;
      call.backend.sum_axis({args.out, args.a->data(), s.outer, s.length, s.inner});
    });
const OpSpec<E> kBroadcastAxis(
    "broadcastAxis", Runs::kAny, kernel<&ops::Backend::broadcast_axis>,
    {arg<&E::a>("a"), arg<&E::shape>("shape"), index<&E::axis>("axis"), out<&E::out, &E::shape>()},
    [](const char* fn, E& args) { args.range.split = rules::broadcast(fn, args.a->shape(), args.shape, args.axis); },
    [](const Call& call, E& args) {
      const rules::AxisSplit& s = args.range.split;
      call.backend.broadcast_axis({args.out, args.a->data(), s.outer, s.length, s.inner});
    });

ops::Narrow narrow(const E& args) {
  const rules::Range& r = args.range;
  return {args.out, args.a->data(), r.split.outer, r.split.length, r.split.inner, r.start, r.length};
}

const OpSpec<E> kNarrow(
    "narrow", Runs::kAny, kernel<&ops::Backend::narrow>,
    {arg<&E::a>("a"), index<&E::at>("axis"), index<&E::start>("start"), index<&E::length>("length"),
     out<&E::out, &E::shape>()},
    [](const char* fn, E& args) {
      args.range = rules::narrow_range(fn, args.a->shape(), args.at, args.start, args.length);
      args.shape = args.range.narrowed;
    },
    [](const Call& call, E& args) { call.backend.narrow(narrow(args)); });
const OpSpec<E> kNarrowBackward(
    "narrowBackward", Runs::kAny, kernel<&ops::Backend::narrow_backward>,
    {arg<&E::a>("grad"), arg<&E::shape>("shape"), index<&E::at>("axis"), index<&E::start>("start"),
     out<&E::out, &E::shape>()},
    [](const char* fn, E& args) {
      args.range = rules::narrow_backward_range(fn, args.a->shape(), args.shape, args.at, args.start);
    },
    [](const Call& call, E& args) { call.backend.narrow_backward(narrow(args)); });

const OpSpec<E> kGlobalNorm(
    "globalNorm", Runs::kAny, kernel<&ops::Backend::global_norm>, {arg<&E::tensors>("tensors")}, nullptr,
    [](const Call& call, E& args) -> Napi::Value {
      double norm = 0;
      call.backend.global_norm({&norm, args.tensors.read(), args.tensors.lengths.data(), args.tensors.count()});
      return Napi::Number::New(call.env, norm);
    });

}  // namespace

}  // namespace bidora::binding
