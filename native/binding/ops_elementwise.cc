// Elementwise arithmetic, axis reductions and ranges along an axis, declared with op.h. Each runs on its tensors'
// device and returns a fresh tensor there (axpy writes y in place). Throw TypeError (not a live tensor, devices
// differ, not a number) and RangeError (shapes that do not fit, an axis or range out of bounds, a scalar not finite).
#include "op.h"

namespace bidora::binding {

namespace {

// [sync] add({ a, b }), sub({ a, b }), mul({ a, b }): shaped like a; b has a's shape or its trailing dims.
struct BinaryArgs {
  TensorHandle *a, *b;
  int64_t period;
};

template <ops::BinaryOp Op>
OpSpec<BinaryArgs> binary(const char* name) {
  return OpSpec<BinaryArgs>(
      name, Runs::kAny, kernel<&ops::Backend::binary>, {arg<&BinaryArgs::a>("a"), arg<&BinaryArgs::b>("b")},
      [](const char* fn, BinaryArgs& args) {
        args.period = rules::broadcast_period(fn, args.a->shape(), args.b->shape());
      },
      [](const Call& call, BinaryArgs& args) -> Napi::Value {
        float* out;
        Napi::Object result = call.output(args.a->shape(), &out);
        call.backend.binary({Op, out, args.a->data(), args.b->data(), args.a->numel(), args.period});
        return result;
      });
}

const OpSpec<BinaryArgs> kAdd = binary<ops::BinaryOp::kAdd>("add");
const OpSpec<BinaryArgs> kSub = binary<ops::BinaryOp::kSub>("sub");
const OpSpec<BinaryArgs> kMul = binary<ops::BinaryOp::kMul>("mul");

// [sync] scale({ a, alpha }): alpha · a.
struct ScaleArgs {
  TensorHandle* a;
  float alpha;
};

const OpSpec<ScaleArgs> kScale("scale", Runs::kAny, kernel<&ops::Backend::scale>,
                               {arg<&ScaleArgs::a>("a"), arg<&ScaleArgs::alpha>("alpha")}, nullptr,
                               [](const Call& call, ScaleArgs& args) -> Napi::Value {
                                 float* out;
                                 Napi::Object result = call.output(args.a->shape(), &out);
                                 call.backend.scale({out, args.a->data(), args.a->numel(), args.alpha});
                                 return result;
                               });

// [sync] axpy({ y, alpha, x }): void - y += alpha · x in place; x has y's shape.
struct AxpyArgs {
  TensorHandle* y;
  float alpha;
  TensorHandle* x;
};

const OpSpec<AxpyArgs> kAxpy(
    "axpy", Runs::kAny, kernel<&ops::Backend::axpy>,
    {arg<&AxpyArgs::y>("y", kWritten), arg<&AxpyArgs::alpha>("alpha"), arg<&AxpyArgs::x>("x")},
    [](const char* fn, AxpyArgs& args) { rules::same_shape(fn, "y", args.y->shape(), "x", args.x->shape()); },
    [](const Call& call, AxpyArgs& args) -> Napi::Value {
      call.backend.axpy({.y = args.y->data(), .x = args.x->data(), .n = args.y->numel(), .alpha = args.alpha});
      return call.env.Undefined();
    });

// [sync] sum({ a, axis?, keepDims? }): over one axis (negative counts from the end), or over everything.
struct SumArgs {
  TensorHandle* a;
  std::optional<double> axis;
  bool keep_dims = false;
  rules::Reduction reduction;
};

const OpSpec<SumArgs> kSum(
    "sum", Runs::kAny, kernel<&ops::Backend::sum_axis>,
    {arg<&SumArgs::a>("a"), index<&SumArgs::axis>("axis"), arg<&SumArgs::keep_dims>("keepDims")},
    [](const char* fn, SumArgs& args) {
      args.reduction = rules::reduction(fn, args.a->shape(), args.axis, args.keep_dims);
    },
    [](const Call& call, SumArgs& args) -> Napi::Value {
      const rules::AxisSplit& split = args.reduction.split;
      float* out;
      Napi::Object result = call.output(args.reduction.out, &out);
      call.backend.sum_axis({out, args.a->data(), split.outer, split.length, split.inner});
      return result;
    });

// [sync] broadcastAxis({ a, shape, axis? }): `shape` filled with a repeated along `axis` (a lacks it), or with a's one
// value when axis is absent: the gradient of sum.
struct BroadcastArgs {
  TensorHandle* a;
  Shape shape;
  std::optional<double> axis;
  rules::AxisSplit split;
};

const OpSpec<BroadcastArgs> kBroadcastAxis(
    "broadcastAxis", Runs::kAny, kernel<&ops::Backend::broadcast_axis>,
    {arg<&BroadcastArgs::a>("a"), arg<&BroadcastArgs::shape>("shape"), index<&BroadcastArgs::axis>("axis")},
    [](const char* fn, BroadcastArgs& args) {
      args.split =
          args.axis ? rules::split_axis(fn, *args.axis, args.shape) : rules::AxisSplit{0, 1, args.shape.numel(), 1};
      if (args.a->numel() != args.split.outer * args.split.inner) {
        throw RangeError(std::string(fn) + ": " + describe("a", args.a->shape()) + " does not match " +
                         args.shape.str() + " without the broadcast axis");
      }
    },
    [](const Call& call, BroadcastArgs& args) -> Napi::Value {
      float* out;
      Napi::Object result = call.output(args.shape, &out);
      call.backend.broadcast_axis({out, args.a->data(), args.split.outer, args.split.length, args.split.inner});
      return result;
    });

// [sync] narrow({ a, axis, start, length }): a copy of a[..., start : start + length, ...] along `axis`.
// [sync] narrowBackward({ grad, shape, axis, start }): zeros of `shape` with grad at [start, start + its length).
struct NarrowArgs {
  TensorHandle* a;
  Shape shape;
  double axis, start, length;
  rules::Range range;
  bool backward = false;
};

Napi::Value narrow_body(const Call& call, NarrowArgs& args) {
  const rules::Range& r = args.range;
  float* out;
  Napi::Object result = call.output(args.backward ? args.shape : r.narrowed, &out);
  const ops::Narrow kernel_args{out, args.a->data(), r.split.outer, r.split.length, r.split.inner, r.start, r.length};
  args.backward ? call.backend.narrow_backward(kernel_args) : call.backend.narrow(kernel_args);
  return result;
}

const OpSpec<NarrowArgs> kNarrow(
    "narrow", Runs::kAny, kernel<&ops::Backend::narrow>,
    {arg<&NarrowArgs::a>("a"), index<&NarrowArgs::axis>("axis"), index<&NarrowArgs::start>("start"),
     index<&NarrowArgs::length>("length")},
    [](const char* fn, NarrowArgs& args) {
      args.range = rules::narrow_range(fn, args.a->shape(), args.axis, args.start, args.length);
    },
    narrow_body);

const OpSpec<NarrowArgs> kNarrowBackward(
    "narrowBackward", Runs::kAny, kernel<&ops::Backend::narrow_backward>,
    {arg<&NarrowArgs::a>("grad"), arg<&NarrowArgs::shape>("shape"), index<&NarrowArgs::axis>("axis"),
     index<&NarrowArgs::start>("start")},
    [](const char* fn, NarrowArgs& args) {
      args.range = rules::narrow_backward_range(fn, args.a->shape(), args.shape, args.axis, args.start);
      args.backward = true;
    },
    narrow_body);

// [sync] globalNorm({ tensors }): number - sqrt(Σ x²) over every element of every tensor, in double.
struct GlobalNormArgs {
  TensorList tensors;
};

const OpSpec<GlobalNormArgs> kGlobalNorm(
    "globalNorm", Runs::kAny, kernel<&ops::Backend::global_norm>, {arg<&GlobalNormArgs::tensors>("tensors")}, nullptr,
    [](const Call& call, GlobalNormArgs& args) -> Napi::Value {
      double norm = 0;
      call.backend.global_norm({&norm, args.tensors.read(), args.tensors.lengths.data(), args.tensors.count()});
      return Napi::Number::New(call.env, norm);
    });

}  // namespace

void register_elementwise(Napi::Env env, Napi::Object exports) {
  register_ops(env, exports, kAdd, kSub, kMul, kScale, kAxpy, kSum, kBroadcastAxis, kNarrow, kNarrowBackward,
               kGlobalNorm);
}

}  // namespace bidora::binding
