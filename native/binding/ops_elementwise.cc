// Node-API glue for elementwise arithmetic and reductions.
#include <cmath>
#include <vector>

#include "../cpu/elementwise.h"
#include "../cpu/narrow.h"
#include "args.h"
#include "gpu.h"
#include "ops.h"
#include "tensor_handle.h"

namespace bidora::binding {

namespace {

// b broadcasts over a when its shape equals a's or the trailing dims of a's (a bias over rows).
int64_t broadcast_period(const char* function, const Shape& a, const Shape& b) {
  if (b.rank > a.rank) {
    throw RangeError(std::string(function) + ": b must have the shape of a or of its trailing dims, but " +
                     describe("a", a) + " and " + describe("b", b));
  }
  for (int axis = 0; axis < b.rank; ++axis) {
    if (b[b.rank - 1 - axis] != a[a.rank - 1 - axis]) {
      throw RangeError(std::string(function) + ": b must have the shape of a or of its trailing dims, but " +
                       describe("a", a) + " and " + describe("b", b));
    }
  }
  return b.numel();
}

using BinaryKernel = void (*)(float*, const float*, const float*, int64_t, int64_t);
#if BIDORA_HAVE_CUDA
using GpuBinaryKernel = void (*)(float*, const float*, const float*, int64_t, int64_t, cudaStream_t);
#else
using GpuBinaryKernel = void*;
#endif

template <BinaryKernel Kernel, GpuBinaryKernel GpuKernel>
Napi::Value binary(const Napi::CallbackInfo& info, const char* function) {
  return guarded(info, [&]() -> Napi::Value {
    TensorHandle& a = any_tensor_arg({info, 0, function, "a"});
    TensorHandle& b = any_tensor_arg({info, 1, function, "b"});
    const Device device = same_device(function, {{"a", &a}, {"b", &b}});
    const int64_t period = broadcast_period(function, a.shape(), b.shape());
    TensorHandle* out = nullptr;
    Napi::Object result = TensorHandle::allocate(info.Env(), a.shape(), &out, device);
#if BIDORA_HAVE_CUDA
    if (device == Device::kCuda) {
      GpuKernel(out->data(), a.data(), b.data(), a.numel(), period, nullptr);
      cuda::check_launch(function);
      return result;
    }
#endif
    if (a.numel() > 0) Kernel(out->data(), a.data(), b.data(), a.numel(), period);
    return result;
  });
}

#if BIDORA_HAVE_CUDA
#define BIDORA_GPU(kernel) cuda::kernel
#else
#define BIDORA_GPU(kernel) nullptr
#endif

// [sync] add(a, b) / sub(a, b) / mul(a, b): TensorHandle shaped like a, on a's and b's device. b: a's shape or its
// trailing dims. Throws TypeError (not a live tensor, devices differ), RangeError (shapes that do not broadcast).
Napi::Value add(const Napi::CallbackInfo& info) { return binary<cpu::add, BIDORA_GPU(add)>(info, "add"); }
Napi::Value sub(const Napi::CallbackInfo& info) { return binary<cpu::sub, BIDORA_GPU(sub)>(info, "sub"); }
Napi::Value mul(const Napi::CallbackInfo& info) { return binary<cpu::mul, BIDORA_GPU(mul)>(info, "mul"); }

#undef BIDORA_GPU

// [sync] scale(a, alpha: number): TensorHandle = alpha * a, on a's device. Throws TypeError, RangeError (alpha not
// finite).
Napi::Value scale(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    TensorHandle& a = any_tensor_arg({info, 0, "scale", "a"});
    const double alpha = number_arg({info, 1, "scale", "alpha"});
    TensorHandle* out = nullptr;
    Napi::Object result = TensorHandle::allocate(info.Env(), a.shape(), &out, a.device());
#if BIDORA_HAVE_CUDA
    if (a.device() == Device::kCuda) {
      cuda::scale(out->data(), a.data(), static_cast<float>(alpha), a.numel(), nullptr);
      cuda::check_launch("scale");
      return result;
    }
#endif
    cpu::scale(out->data(), a.data(), static_cast<float>(alpha), a.numel());
    return result;
  });
}

// [sync] axpy(y, alpha: number, x): void - y += alpha * x in place, on their device. Throws TypeError (devices
// differ), RangeError (shapes differ).
Napi::Value axpy(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    TensorHandle& y = any_tensor_arg({info, 0, "axpy", "y"});
    const double alpha = number_arg({info, 1, "axpy", "alpha"});
    TensorHandle& x = any_tensor_arg({info, 2, "axpy", "x"});
    const Device device = same_device("axpy", {{"y", &y}, {"x", &x}});
    if (x.shape() != y.shape()) {
      throw RangeError("axpy: x and y must have the same shape, but " + describe("y", y.shape()) + " and " +
                       describe("x", x.shape()));
    }
    y.mark_modified();  // first, as write() does
#if BIDORA_HAVE_CUDA
    if (device == Device::kCuda) {
      cuda::axpy(y.data(), static_cast<float>(alpha), x.data(), y.numel(), nullptr);
      cuda::check_launch("axpy");
      return info.Env().Undefined();
    }
#else
    (void)device;
#endif
    cpu::axpy(y.data(), static_cast<float>(alpha), x.data(), y.numel());
    return info.Env().Undefined();
  });
}

// [sync] sum(a, axis: number | undefined, keepDims: boolean): TensorHandle - over one axis (negative counts from
// the end), or over everything when axis is undefined; on a's device. Throws TypeError, RangeError (axis out of
// range).
Napi::Value sum(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    TensorHandle& a = any_tensor_arg({info, 0, "sum", "a"});
    const Shape& shape = a.shape();
    const bool keep_dims = boolean_arg({info, 2, "sum", "keepDims"}, false);
    Shape out_shape;
    int64_t outer = 1, axis_length = a.numel(), inner = 1;
    if (Arg{info, 1, "sum", "axis"}.missing()) {
      out_shape.rank = keep_dims ? shape.rank : 0;
      for (int axis = 0; axis < out_shape.rank; ++axis) out_shape.dims[axis] = 1;
    } else {
      const int rank = std::max(shape.rank, 1);
      int64_t axis = integer_arg({info, 1, "sum", "axis"}, -rank, rank - 1);
      if (axis < 0) axis += rank;
      if (shape.rank == 0) {
        axis_length = 1;
      } else {
        for (int dim = 0; dim < axis; ++dim) outer *= shape[dim];
        axis_length = shape[static_cast<int>(axis)];
        for (int dim = static_cast<int>(axis) + 1; dim < shape.rank; ++dim) inner *= shape[dim];
      }
      for (int dim = 0; dim < shape.rank; ++dim) {
        if (dim == axis) {
          if (keep_dims) out_shape.dims[out_shape.rank++] = 1;
        } else {
          out_shape.dims[out_shape.rank++] = shape[dim];
        }
      }
    }
    TensorHandle* out = nullptr;
    Napi::Object result = TensorHandle::allocate(info.Env(), out_shape, &out, a.device());
#if BIDORA_HAVE_CUDA
    if (a.device() == Device::kCuda) {
      cuda::sum_axis(out->data(), a.data(), outer, axis_length, inner, nullptr);
      cuda::check_launch("sum");
      return result;
    }
#endif
    cpu::sum_axis(out->data(), a.data(), outer, axis_length, inner);
    return result;
  });
}

// [sync] broadcastAxis(a, shape: number[], axis: number | undefined): TensorHandle of `shape`, repeating a along
// `axis` (a has shape without that axis), or filling it with the one value of a when axis is undefined: the gradient
// of sum; on a's device. Throws TypeError, RangeError (a's size does not match).
Napi::Value broadcast_axis(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    TensorHandle& a = any_tensor_arg({info, 0, "broadcastAxis", "a"});
    const Shape shape = shape_arg({info, 1, "broadcastAxis", "shape"});
    int64_t outer = 1, length = shape.numel(), inner = 1;
    if (!Arg{info, 2, "broadcastAxis", "axis"}.missing()) {
      const int rank = std::max(shape.rank, 1);
      int64_t axis = integer_arg({info, 2, "broadcastAxis", "axis"}, -rank, rank - 1);
      if (axis < 0) axis += rank;
      length = shape.rank == 0 ? 1 : shape[static_cast<int>(axis)];
      for (int dim = 0; dim < axis; ++dim) outer *= shape[dim];
      for (int dim = static_cast<int>(axis) + 1; dim < shape.rank; ++dim) inner *= shape[dim];
    }
    if (a.numel() != outer * inner) {
      throw RangeError("broadcastAxis: " + describe("a", a.shape()) + " does not match " + shape.str() +
                       " without the broadcast axis");
    }
    TensorHandle* out = nullptr;
    Napi::Object result = TensorHandle::allocate(info.Env(), shape, &out, a.device());
#if BIDORA_HAVE_CUDA
    if (a.device() == Device::kCuda) {
      cuda::broadcast_axis(out->data(), a.data(), outer, length, inner, nullptr);
      cuda::check_launch("broadcastAxis");
      return result;
    }
#endif
    cpu::broadcast_axis(out->data(), a.data(), outer, length, inner);
    return result;
  });
}

// The [outer, axis, inner] reading of `shape` around `axis` (negative counts from the end); RangeError if out of range.
struct AxisSplit {
  int axis;
  int64_t outer, length, inner;
};

AxisSplit split_at(const Napi::CallbackInfo& info, size_t index, const char* fn, const Shape& shape) {
  const int64_t rank = std::max(shape.rank, 1);
  int64_t axis = integer_arg({info, index, fn, "axis"}, -rank, rank - 1);
  if (axis < 0) axis += rank;
  if (shape.rank == 0) throw RangeError(std::string(fn) + ": cannot take a range of a rank-0 tensor");
  AxisSplit split{static_cast<int>(axis), 1, shape[static_cast<int>(axis)], 1};
  for (int dim = 0; dim < axis; ++dim) split.outer *= shape[dim];
  for (int dim = split.axis + 1; dim < shape.rank; ++dim) split.inner *= shape[dim];
  return split;
}

// [sync] narrow(a, axis: number, start: number, length: number): TensorHandle - a copy of
// a[..., start : start + length, ...] along `axis`, on a's device. Throws TypeError, RangeError (axis or range out
// of bounds).
Napi::Value narrow(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    TensorHandle& a = any_tensor_arg({info, 0, "narrow", "a"});
    const AxisSplit split = split_at(info, 1, "narrow", a.shape());
    const int64_t start = integer_arg({info, 2, "narrow", "start"}, 0, split.length);
    const int64_t length = integer_arg({info, 3, "narrow", "length"}, 0, split.length - start);
    Shape out_shape = a.shape();
    out_shape.dims[split.axis] = length;
    TensorHandle* out = nullptr;
    Napi::Object result = TensorHandle::allocate(info.Env(), out_shape, &out, a.device());
#if BIDORA_HAVE_CUDA
    if (a.device() == Device::kCuda) {
      cuda::narrow(out->data(), a.data(), split.outer, split.length, split.inner, start, length, nullptr);
      cuda::check_launch("narrow");
      return result;
    }
#endif
    cpu::narrow(out->data(), a.data(), split.outer, split.length, split.inner, start, length);
    return result;
  });
}

// [sync] narrowBackward(grad, shape: number[], axis: number, start: number): TensorHandle of `shape`, zero but for
// grad at [start, start + grad's length) along `axis`; on grad's device. Throws TypeError, RangeError (shapes
// disagree).
Napi::Value narrow_backward(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    TensorHandle& grad = any_tensor_arg({info, 0, "narrowBackward", "grad"});
    const Shape shape = shape_arg({info, 1, "narrowBackward", "shape"});
    const AxisSplit split = split_at(info, 2, "narrowBackward", shape);
    const Shape& g = grad.shape();
    const int64_t length = g.rank == shape.rank ? g[split.axis] : -1;
    const int64_t start = integer_arg({info, 3, "narrowBackward", "start"}, 0, split.length);
    if (length < 0 || start + length > split.length || grad.numel() != split.outer * length * split.inner) {
      throw RangeError("narrowBackward: " + describe("grad", g) + " is not a range of " + shape.str());
    }
    TensorHandle* out = nullptr;
    Napi::Object result = TensorHandle::allocate(info.Env(), shape, &out, grad.device());
#if BIDORA_HAVE_CUDA
    if (grad.device() == Device::kCuda) {
      cuda::narrow_backward(out->data(), grad.data(), split.outer, split.length, split.inner, start, length, nullptr);
      cuda::check_launch("narrowBackward");
      return result;
    }
#endif
    cpu::narrow_backward(out->data(), grad.data(), split.outer, split.length, split.inner, start, length);
    return result;
  });
}

// [sync] globalNorm(tensors: TensorHandle[]): number - sqrt of the sum of squares of every element of every tensor,
// accumulated in double, on the tensors' device (a GPU result is rounded to float once). Throws TypeError (not an
// array of live tensors, or tensors on different devices).
Napi::Value global_norm(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    if (!info[0].IsArray()) throw bidora::TypeError("globalNorm: tensors must be an array of Tensors");
    Napi::Array list = info[0].As<Napi::Array>();
    std::vector<const float*> arrays;
    std::vector<int64_t> lengths;
    const TensorHandle* first = nullptr;
    for (uint32_t index = 0; index < list.Length(); ++index) {
      const std::string name = "tensors[" + std::to_string(index) + "]";
      TensorHandle& handle = tensor_value(info.Env(), list.Get(index), "globalNorm: " + name, true);
      if (first == nullptr) first = &handle;
      same_device("globalNorm", {{"tensors[0]", first}, {name.c_str(), &handle}});
      arrays.push_back(handle.data());
      lengths.push_back(handle.numel());
    }
#if BIDORA_HAVE_CUDA
    if (first != nullptr && first->device() == Device::kCuda) {
      const int count = static_cast<int>(arrays.size());
      auto* partials = static_cast<double*>(
          cuda::scratch(0, static_cast<size_t>(count) * cuda::kNormPartialsPerTensor * sizeof(double), "globalNorm"));
      auto* norm = static_cast<float*>(cuda::scratch(1, sizeof(float), "globalNorm"));
      cuda::list_global_norm(norm, partials, arrays.data(), lengths.data(), count, nullptr);
      cuda::check_launch("globalNorm");
      float result = 0;
      cuda::copy_to_host(&result, norm, 1, "globalNorm");
      return Napi::Number::New(info.Env(), result);
    }
#endif
    const double squares = cpu::sum_of_squares(arrays.data(), lengths.data(), static_cast<int64_t>(arrays.size()));
    return Napi::Number::New(info.Env(), std::sqrt(squares));
  });
}

}  // namespace

void register_elementwise(Napi::Env env, Napi::Object exports) {
  exports.Set("add", Napi::Function::New<add>(env, "add"));
  exports.Set("sub", Napi::Function::New<sub>(env, "sub"));
  exports.Set("mul", Napi::Function::New<mul>(env, "mul"));
  exports.Set("scale", Napi::Function::New<scale>(env, "scale"));
  exports.Set("axpy", Napi::Function::New<axpy>(env, "axpy"));
  exports.Set("sum", Napi::Function::New<sum>(env, "sum"));
  exports.Set("broadcastAxis", Napi::Function::New<broadcast_axis>(env, "broadcastAxis"));
  exports.Set("narrow", Napi::Function::New<narrow>(env, "narrow"));
  exports.Set("narrowBackward", Napi::Function::New<narrow_backward>(env, "narrowBackward"));
  exports.Set("globalNorm", Napi::Function::New<global_norm>(env, "globalNorm"));
}

}  // namespace bidora::binding
