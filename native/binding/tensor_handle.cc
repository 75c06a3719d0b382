// The native tensor handle (op.h) and the ops that create tensors.
#include <algorithm>
#include <cstring>
#include <utility>

#include "op.h"

namespace bidora::binding {

namespace {

// What a handle being created from C++ takes over; JavaScript cannot construct handles itself.
struct Pending {
  const Shape& shape;
  std::shared_ptr<Storage> storage;
  bool is_view;
};
thread_local const Pending* pending = nullptr;

Napi::Object construct(Napi::Env env, const Shape& shape, std::shared_ptr<Storage> storage, bool is_view) {
  const Pending handle{shape, std::move(storage), is_view};
  pending = &handle;
  struct Reset {
    ~Reset() { pending = nullptr; }
  } reset;
  return state(env).tensor_constructor.New({});
}

}  // namespace

Napi::Function TensorHandle::define(Napi::Env env) {
  Napi::Function constructor = DefineClass(env, "TensorHandle", {});
  Napi::Object prototype = constructor.Get("prototype").As<Napi::Object>();
  // The getters but `disposed` throw TypeError naming themselves once the handle is disposed.
  auto getter = [&](const char* name, auto get) {
    return Napi::PropertyDescriptor::Accessor(env, prototype, name, [name, get](const Napi::CallbackInfo& info) {
      return Napi::Value::From(info.Env(), get(this_handle(info, name), info.Env()));
    });
  };
  auto disposed = [](const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), live(info.Env(), info.This()) == nullptr);
  };
  prototype.DefineProperties({
      Napi::PropertyDescriptor::Function(env, prototype, "read", read),
      Napi::PropertyDescriptor::Function(env, prototype, "write", write),
      Napi::PropertyDescriptor::Function(env, prototype, "dispose", dispose),
      getter("shape",
             [](TensorHandle& handle, Napi::Env env) {
               const Shape& shape = handle.shape();
               Napi::Array dims = Napi::Array::New(env, shape.rank);
               for (int axis = 0; axis < shape.rank; ++axis) dims.Set(axis, static_cast<double>(shape.dims[axis]));
               return dims;
             }),
      getter("version", [](TensorHandle& handle, Napi::Env) { return static_cast<double>(handle.version()); }),
      getter("device", [](TensorHandle& handle, Napi::Env) { return device_name(handle.device()); }),
      getter("dtype", [](TensorHandle& handle, Napi::Env) { return dtype_name(handle.dtype()); }),
      Napi::PropertyDescriptor::Accessor(env, prototype, "disposed", disposed),
  });
  return constructor;
}

TensorHandle* TensorHandle::live(Napi::Env env, Napi::Value object) {
  // napi_unwrap fails (without throwing) for an object whose wrap dispose() removed.
  void* native = nullptr;
  if (!object.IsObject() || napi_unwrap(env, object, &native) != napi_ok) return nullptr;
  return static_cast<TensorHandle*>(native);
}

TensorHandle& TensorHandle::this_handle(const Napi::CallbackInfo& info, const char* function) {
  TensorHandle* handle = live(info.Env(), info.This());
  if (handle == nullptr) throw Napi::TypeError::New(info.Env(), std::string(function) + ": the tensor is disposed");
  return *handle;
}

Napi::Object TensorHandle::create(Napi::Env env, const Shape& shape, FloatBuffer buffer, DType dtype) {
  return construct(env, shape, std::make_shared<Storage>(std::move(buffer), dtype), false);
}

Napi::Object TensorHandle::view(Napi::Env env, const Shape& shape) { return construct(env, shape, storage_, true); }

Napi::Object TensorHandle::allocate(Napi::Env env, const Shape& shape, TensorHandle** handle, Device device,
                                    DType dtype) {
  Napi::Object object =
      construct(env, shape, make_storage(device, backend_for(device), shape.numel(), dtype, state(env).stats), false);
  *handle = Unwrap(object);
  return object;
}

Napi::Object TensorHandle::copy_to(Napi::Env env, Device device, const char* function) {
  TensorHandle* copy = nullptr;
  Napi::Object object = allocate(env, shape_, &copy, device, dtype());
  copy->storage_->copy_from(*storage_, words(), function);
  return object;
}

TensorHandle::TensorHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorHandle>(info) {
  if (pending == nullptr) {
    throw Napi::TypeError::New(info.Env(), "TensorHandle cannot be constructed directly; use Tensor.from()");
  }
  shape_ = pending->shape;
  storage_ = pending->storage;
  device_ = storage_->device;
  const bool is_view = pending->is_view;
  pending = nullptr;
  AddonState& addon = state(info.Env());
  stats_ = addon.stats;
  stats_->live_tensors.fetch_add(1, std::memory_order_relaxed);
  // V8 is told of host memory so that garbage collection (and with it the finaliser) runs under pressure, though not
  // at once (ExternalMemory). GPU memory is not reported: V8's heuristics are about host memory, and memory()
  // reports deviceBytes.
  external_ = addon.external;
  const int64_t host_bytes = is_view ? 0 : storage_->buffer.size() * static_cast<int64_t>(sizeof(float));
  if (external_->add(host_, host_bytes)) report_external_memory(info.Env());
}

void TensorHandle::report_external_memory(Napi::Env env) {
  const int64_t bytes = state(env).external->report();
  if (bytes > 0) Napi::MemoryManagement::AdjustExternalMemory(env, bytes);
}

void TensorHandle::forget_external_memory(Napi::Env env) {
  const int64_t told = external_->remove(host_);
  if (told > 0) Napi::MemoryManagement::AdjustExternalMemory(env, -told);
}

void TensorHandle::Finalize(Napi::Env env) { forget_external_memory(env); }

TensorHandle::~TensorHandle() {
  // Run by destroy() or, for a handle never disposed, by the finaliser after garbage collection. Memory counters
  // live in shared state, so this is safe even when the environment is being torn down.
  storage_.reset();
  if (stats_) stats_->live_tensors.fetch_sub(1, std::memory_order_relaxed);
}

void TensorHandle::destroy(Napi::Env env, Napi::Object object) {
  storage_.reset();
  forget_external_memory(env);
  // Without its wrap the object owes the finaliser nothing; ~ObjectWrap then deletes the reference napi_wrap made.
  // What is left until garbage collection is the bare JavaScript object.
  if (napi_remove_wrap(env, object, nullptr) != napi_ok) {
    throw Napi::TypeError::New(env, "dispose: the tensor handle could not be detached");
  }
  delete this;
}

Napi::Value TensorHandle::read(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    TensorHandle& handle = this_handle(info, "read");
    Napi::Float32Array copy = Napi::Float32Array::New(info.Env(), static_cast<size_t>(handle.numel()));
    handle.storage_->read_floats(copy.Data(), handle.numel(), "read");
    return copy;
  });
}

Napi::Value TensorHandle::write(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    TensorHandle& handle = this_handle(info, "write");
    Napi::Float32Array data = parse("write", "data", info[0], static_cast<Napi::Float32Array*>(nullptr));
    if (static_cast<int64_t>(data.ElementLength()) != handle.numel()) {
      throw RangeError("write: data has " + std::to_string(data.ElementLength()) +
                       " elements but the tensor has shape " + handle.shape().str());
    }
    // Bumped first: even a copy that fails halfway has changed what backward would read.
    handle.mark_modified();
    handle.storage_->write_floats(data.Data(), handle.numel(), "write");
    return info.Env().Undefined();
  });
}

Napi::Value TensorHandle::dispose(const Napi::CallbackInfo& info) {
  TensorHandle* handle = live(info.Env(), info.This());
  if (handle != nullptr) handle->destroy(info.Env(), info.This().As<Napi::Object>());
  return info.Env().Undefined();
}

namespace {

// ---- creation and views, declared with op.h. Creation takes no tensor, so it runs on the CPU (lib/tensor.ts moves
// the result). [sync] fromFloat32Array({ data, shape }), fromBFloat16({ bits, shape }), full({ shape, value }),
// randn({ shape, seed, mean, std }), uniform({ shape, seed, low, high }); reshape({ x, shape }): a view of x's storage;
// toDevice({ x, device }) and cast({ x, dtype }): copies, the second converted (to bfloat16: nearest even).
struct CreateArgs {
  Napi::Float32Array data;
  Napi::Uint16Array bits;
  Shape shape;
  double value;
  uint64_t seed;
  float a, b;
  TensorHandle* x;
  std::string device, dtype;
  float* out;
};
using C = CreateArgs;

Napi::Value cast(const Call& call, C& op) {
  TensorHandle* out = nullptr;
  const DType to = parse_dtype(op.dtype, std::string(call.fn) + ": dtype");
  Napi::Object object = TensorHandle::allocate(call.env, op.x->shape(), &out, call.device, to);
  op.x->convert_into(*out, call.fn);
  return object;
}

template <ops::Distribution kind>
void random(const Call& call, C& op) {
  call.backend.fill({op.out, op.shape.numel(), kind, op.seed, op.a, op.b});
}

Field<C> shape() { return arg<&C::shape>("shape"); }
Field<C> seed() { return arg<&C::seed>("seed", closed(0, kMaxSafeInteger)); }

const OpSpec<C> kFromFloat32Array(
    "fromFloat32Array", Runs::kCpu, nullptr, {arg<&C::data>("data"), shape(), out<&C::out, &C::shape>()},
    [](const char* fn, C& op) { rules::length(fn, "data", int64_t(op.data.ElementLength()), op.shape); },
    [](const Call&, C& op) { std::copy_n(op.data.Data(), op.shape.numel(), op.out); }, "Tensor.from");
const OpSpec<C> kFromBFloat16(
    "fromBFloat16", Runs::kCpu, nullptr, {arg<&C::bits>("bits"), shape()},
    [](const char* fn, C& op) { rules::length(fn, "bits", int64_t(op.bits.ElementLength()), op.shape); },
    [](const Call& call, C& op) -> Napi::Value {
      return TensorHandle::create(call.env, op.shape, bf16_words(op.bits.Data(), op.shape.numel()), DType::kBfloat16);
    },
    "Tensor.fromBFloat16");
const OpSpec<C> kFull(
    "full", Runs::kCpu, nullptr, {shape(), arg<&C::value>("value")}, nullptr,
    [](const Call& call, C& op) -> Napi::Value {
      return TensorHandle::create(call.env, op.shape, FloatBuffer::filled(op.shape.numel(), float(op.value)));
    },
    "Tensor.full");
const OpSpec<C> kRandn("randn", Runs::kCpu, kernel<&ops::Backend::fill>,
                       {shape(), seed(), arg<&C::a>("mean"), arg<&C::b>("std", kNonNegative),
                        out<&C::out, &C::shape>()},
                       nullptr, random<ops::Distribution::kNormal>, "Tensor.randn");
const OpSpec<C> kUniform(
    "uniform", Runs::kCpu, kernel<&ops::Backend::fill>,
    {shape(), seed(), arg<&C::a>("low"), arg<&C::b>("high"), out<&C::out, &C::shape>()},
    [](const char* fn, C& op) { rules::below(fn, "low", op.a, "high", op.b); }, random<ops::Distribution::kUniform>,
    "Tensor.uniform");
const OpSpec<C> kReshape(
    "reshape", Runs::kAny, nullptr, {arg<&C::x>("x", kBf16), shape()},
    [](const char* fn, C& op) { rules::reshape(fn, op.x->shape(), op.shape); },
    [](const Call& call, C& op) -> Napi::Value { return op.x->view(call.env, op.shape); });
const OpSpec<C> kToDevice(
    "toDevice", Runs::kAny, nullptr, {arg<&C::x>("x", kBf16), arg<&C::device>("device")}, nullptr,
    [](const Call& call, C& op) -> Napi::Value {
      return op.x->copy_to(call.env, usable_device(op.device, std::string(call.fn) + ": device", cuda_backend()),
                           call.fn);
    },
    "Tensor.to");
const OpSpec<C> kCast("cast", Runs::kAny, nullptr, {arg<&C::x>("x", kBf16), arg<&C::dtype>("dtype")}, nullptr, cast,
                      "Tensor.to");

}  // namespace

}  // namespace bidora::binding
