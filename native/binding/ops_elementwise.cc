// Elementwise arithmetic, axis reductions and ranges along an axis, declared with op.h. Every op runs on its tensors'
// device and returns a fresh tensor there (axpy writes y in place).
#include <algorithm>
#include <string>

#include "op.h"

namespace bidora::binding {

namespace {

// ---- binary ops ----

// b broadcasts over a when its shape equals a's or the trailing dims of a's (a bias over rows); returns b's size.
int64_t broadcast_period(const Call& call, const Shape& a, const Shape& b) {
  bool fits = b.rank <= a.rank;
  for (int axis = 0; fits && axis < b.rank; ++axis) fits = b[b.rank - 1 - axis] == a[a.rank - 1 - axis];
  if (!fits) {
    call.fail("b must have the shape of a or of its trailing dims, but " + describe("a", a) + " and " +
              describe("b", b));
  }
  return b.numel();
}

// [sync] add({ a, b }) / sub({ a, b }) / mul({ a, b }): TensorHandle shaped like a. b: a's shape or its trailing dims.
// Throws TypeError (not a live tensor, devices differ), RangeError (shapes that do not broadcast).
struct BinaryArgs {
  TensorHandle *a, *b;
};

template <ops::BinaryOp Op>
Napi::Value binary(const Call& call, BinaryArgs& args) {
  const int64_t period = broadcast_period(call, args.a->shape(), args.b->shape());
  float* out = nullptr;
  Napi::Object result = call.output(args.a->shape(), &out);
  call.backend.binary(
      {.op = Op, .out = out, .a = args.a->data(), .b = args.b->data(), .n = args.a->numel(), .period = period});
  return result;
}

template <ops::BinaryOp Op>
OpSpec<BinaryArgs> binary_spec(const char* name) {
  return {
      name,    Runs::kAny, kernel<&ops::Backend::binary>, {tensor<&BinaryArgs::a>("a"), tensor<&BinaryArgs::b>("b")},
      nullptr, binary<Op>};
}

const OpSpec<BinaryArgs> kAdd = binary_spec<ops::BinaryOp::kAdd>("add");
const OpSpec<BinaryArgs> kSub = binary_spec<ops::BinaryOp::kSub>("sub");
const OpSpec<BinaryArgs> kMul = binary_spec<ops::BinaryOp::kMul>("mul");

// [sync] scale({ a, alpha }): TensorHandle = alpha * a. Throws TypeError, RangeError (alpha not finite).
struct ScaleArgs {
  TensorHandle* a;
  float alpha;
};

const OpSpec<ScaleArgs> kScale{
    "scale",
    Runs::kAny,
    kernel<&ops::Backend::scale>,
    {tensor<&ScaleArgs::a>("a"), number<&ScaleArgs::alpha>("alpha")},
    nullptr,
    [](const Call& call, ScaleArgs& args) -> Napi::Value {
      float* out = nullptr;
      Napi::Object result = call.output(args.a->shape(), &out);
      call.backend.scale({.out = out, .a = args.a->data(), .n = args.a->numel(), .alpha = args.alpha});
      return result;
    }};

// [sync] axpy({ y, alpha, x }): void - y += alpha * x in place. Throws TypeError (devices differ), RangeError (shapes
// differ).
struct AxpyArgs {
  TensorHandle* y;
  float alpha;
  TensorHandle* x;
};

const OpSpec<AxpyArgs> kAxpy{
    "axpy",
    Runs::kAny,
    kernel<&ops::Backend::axpy>,
    {written_tensor<&AxpyArgs::y>("y"), number<&AxpyArgs::alpha>("alpha"), tensor<&AxpyArgs::x>("x")},
    [](const Call& call, AxpyArgs& args) {
      if (args.x->shape() != args.y->shape()) {
        call.fail("x and y must have the same shape, but " + describe("y", args.y->shape()) + " and " +
                  describe("x", args.x->shape()));
      }
    },
    [](const Call& call, AxpyArgs& args) -> Napi::Value {
      call.backend.axpy({.y = args.y->data(), .x = args.x->data(), .n = args.y->numel(), .alpha = args.alpha});
      return call.env.Undefined();
    }};

// ---- reductions over an axis ----

// `shape` read as [outer, axis, inner] around `axis` (negative counts from the end; RangeError naming the bounds).
struct AxisSplit {
  int axis;
  int64_t outer, length, inner;
};

AxisSplit split_at(const Call& call, double requested, const Shape& shape) {
  const int64_t rank = std::max(shape.rank, 1);
  int64_t axis = checked_integer(call.fn, "axis", requested, -rank, rank - 1);
  if (axis < 0) axis += rank;
  AxisSplit split{static_cast<int>(axis), 1, shape.rank == 0 ? 1 : shape[static_cast<int>(axis)], 1};
  for (int dim = 0; dim < axis; ++dim) split.outer *= shape[dim];
  for (int dim = split.axis + 1; dim < shape.rank; ++dim) split.inner *= shape[dim];
  return split;
}

// [sync] sum({ a, axis?, keepDims? }): TensorHandle - over one axis (negative counts from the end), or over
// everything when axis is absent. Throws TypeError, RangeError (axis out of range).
struct SumArgs {
  TensorHandle* a;
  std::optional<double> axis;
  bool keep_dims = false;
};

const OpSpec<SumArgs> kSum{
    "sum",
    Runs::kAny,
    kernel<&ops::Backend::sum_axis>,
    {tensor<&SumArgs::a>("a"), optional_index<&SumArgs::axis>("axis"), boolean<&SumArgs::keep_dims>("keepDims")},
    nullptr,
    [](const Call& call, SumArgs& args) -> Napi::Value {
      const Shape& shape = args.a->shape();
      Shape out_shape;
      AxisSplit split{0, 1, args.a->numel(), 1};
      if (!args.axis) {
        out_shape.rank = args.keep_dims ? shape.rank : 0;
        for (int axis = 0; axis < out_shape.rank; ++axis) out_shape.dims[axis] = 1;
      } else {
        split = split_at(call, *args.axis, shape);
        for (int dim = 0; dim < shape.rank; ++dim) {
          if (dim != split.axis) {
            out_shape.dims[out_shape.rank++] = shape[dim];
          } else if (args.keep_dims) {
            out_shape.dims[out_shape.rank++] = 1;
          }
        }
      }
      float* out = nullptr;
      Napi::Object result = call.output(out_shape, &out);
      call.backend.sum_axis(
          {.out = out, .a = args.a->data(), .outer = split.outer, .axis = split.length, .inner = split.inner});
      return result;
    }};

// [sync] broadcastAxis({ a, shape, axis? }): TensorHandle of `shape`, repeating a along `axis` (a has shape without
// that axis), or filling it with the one value of a when axis is absent: the gradient of sum. Throws TypeError,
// RangeError (a's size does not match).
struct BroadcastArgs {
  TensorHandle* a;
  Shape shape;
  std::optional<double> axis;
};

const OpSpec<BroadcastArgs> kBroadcastAxis{
    "broadcastAxis",
    Runs::kAny,
    kernel<&ops::Backend::broadcast_axis>,
    {tensor<&BroadcastArgs::a>("a"), shape<&BroadcastArgs::shape>("shape"),
     optional_index<&BroadcastArgs::axis>("axis")},
    nullptr,
    [](const Call& call, BroadcastArgs& args) -> Napi::Value {
      const AxisSplit split =
          args.axis ? split_at(call, *args.axis, args.shape) : AxisSplit{0, 1, args.shape.numel(), 1};
      if (args.a->numel() != split.outer * split.inner) {
        call.fail(describe("a", args.a->shape()) + " does not match " + args.shape.str() +
                  " without the broadcast axis");
      }
      float* out = nullptr;
      Napi::Object result = call.output(args.shape, &out);
      call.backend.broadcast_axis(
          {.out = out, .a = args.a->data(), .outer = split.outer, .axis = split.length, .inner = split.inner});
      return result;
    }};

// ---- ranges along an axis ----

AxisSplit range_axis(const Call& call, double axis, const Shape& shape) {
  const AxisSplit split = split_at(call, axis, shape);
  if (shape.rank == 0) call.fail("cannot take a range of a rank-0 tensor");
  return split;
}

// [sync] narrow({ a, axis, start, length }): TensorHandle - a copy of a[..., start : start + length, ...] along
// `axis`. Throws TypeError, RangeError (axis or range out of bounds).
struct NarrowArgs {
  TensorHandle* a;
  double axis, start, length;
};

const OpSpec<NarrowArgs> kNarrow{"narrow",
                                 Runs::kAny,
                                 kernel<&ops::Backend::narrow>,
                                 {tensor<&NarrowArgs::a>("a"), index<&NarrowArgs::axis>("axis"),
                                  index<&NarrowArgs::start>("start"), index<&NarrowArgs::length>("length")},
                                 nullptr,
                                 [](const Call& call, NarrowArgs& args) -> Napi::Value {
                                   const AxisSplit split = range_axis(call, args.axis, args.a->shape());
                                   const int64_t start = checked_integer(call.fn, "start", args.start, 0, split.length);
                                   const int64_t length =
                                       checked_integer(call.fn, "length", args.length, 0, split.length - start);
                                   Shape out_shape = args.a->shape();
                                   out_shape.dims[split.axis] = length;
                                   float* out = nullptr;
                                   Napi::Object result = call.output(out_shape, &out);
                                   call.backend.narrow({.out = out,
                                                        .a = args.a->data(),
                                                        .outer = split.outer,
                                                        .axis = split.length,
                                                        .inner = split.inner,
                                                        .start = start,
                                                        .length = length});
                                   return result;
                                 }};

// [sync] narrowBackward({ grad, shape, axis, start }): TensorHandle of `shape`, zero but for grad at
// [start, start + grad's length) along `axis`. Throws TypeError, RangeError (shapes disagree).
struct NarrowBackwardArgs {
  TensorHandle* grad;
  Shape shape;
  double axis, start;
};

const OpSpec<NarrowBackwardArgs> kNarrowBackward{
    "narrowBackward",
    Runs::kAny,
    kernel<&ops::Backend::narrow_backward>,
    {tensor<&NarrowBackwardArgs::grad>("grad"), shape<&NarrowBackwardArgs::shape>("shape"),
     index<&NarrowBackwardArgs::axis>("axis"), index<&NarrowBackwardArgs::start>("start")},
    nullptr,
    [](const Call& call, NarrowBackwardArgs& args) -> Napi::Value {
      const AxisSplit split = range_axis(call, args.axis, args.shape);
      const Shape& g = args.grad->shape();
      const int64_t length = g.rank == args.shape.rank ? g[split.axis] : -1;
      const int64_t start = checked_integer(call.fn, "start", args.start, 0, split.length);
      if (length < 0 || start + length > split.length || args.grad->numel() != split.outer * length * split.inner) {
        call.fail(describe("grad", g) + " is not a range of " + args.shape.str());
      }
      float* out = nullptr;
      Napi::Object result = call.output(args.shape, &out);
      call.backend.narrow_backward({.out = out,
                                    .a = args.grad->data(),
                                    .outer = split.outer,
                                    .axis = split.length,
                                    .inner = split.inner,
                                    .start = start,
                                    .length = length});
      return result;
    }};

// [sync] globalNorm({ tensors }): number - sqrt of the sum of squares of every element of every tensor, accumulated
// in double (a GPU result is rounded to float once). Throws TypeError (not an array of live tensors, or tensors on
// different devices).
struct GlobalNormArgs {
  TensorList tensors;
};

const OpSpec<GlobalNormArgs> kGlobalNorm{
    "globalNorm",
    Runs::kAny,
    kernel<&ops::Backend::global_norm>,
    {tensor_list<&GlobalNormArgs::tensors>("tensors")},
    nullptr,
    [](const Call& call, GlobalNormArgs& args) -> Napi::Value {
      double norm = 0;
      call.backend.global_norm({.norm = &norm,
                                .tensors = args.tensors.read(),
                                .lengths = args.tensors.lengths.data(),
                                .count = static_cast<int64_t>(args.tensors.size())});
      return Napi::Number::New(call.env, norm);
    }};

}  // namespace

void register_elementwise(Napi::Env env, Napi::Object exports) {
  register_op(env, exports, kAdd);
  register_op(env, exports, kSub);
  register_op(env, exports, kMul);
  register_op(env, exports, kScale);
  register_op(env, exports, kAxpy);
  register_op(env, exports, kSum);
  register_op(env, exports, kBroadcastAxis);
  register_op(env, exports, kNarrow);
  register_op(env, exports, kNarrowBackward);
  register_op(env, exports, kGlobalNorm);
}

}  // namespace bidora::binding
