// The native tensor handle (op.h) and the ops that create tensors.
#include <algorithm>
#include <cstring>
#include <utility>

#include "op.h"

namespace bidora::binding {

namespace {

// What a handle being created from C++ takes over; JavaScript cannot construct handles itself.
thread_local std::shared_ptr<Storage>* pending_storage = nullptr;
thread_local const Shape* pending_shape = nullptr;
thread_local bool pending_is_view = false;

Napi::Object construct(Napi::Env env, const Shape& shape, std::shared_ptr<Storage> storage, bool is_view) {
  pending_storage = &storage;
  pending_shape = &shape;
  pending_is_view = is_view;
  struct Reset {
    ~Reset() {
      pending_storage = nullptr;
      pending_shape = nullptr;
    }
  } reset;
  return state(env).tensor_constructor.New({});
}

}  // namespace

Napi::Function TensorHandle::define(Napi::Env env) {
  Napi::Function constructor = DefineClass(env, "TensorHandle", {});
  Napi::Object prototype = constructor.Get("prototype").As<Napi::Object>();
  prototype.DefineProperties({
      Napi::PropertyDescriptor::Function(env, prototype, "read", read),
      Napi::PropertyDescriptor::Function(env, prototype, "write", write),
      Napi::PropertyDescriptor::Function(env, prototype, "dispose", dispose),
      Napi::PropertyDescriptor::Accessor<shape_getter>("shape"),
      Napi::PropertyDescriptor::Accessor<disposed_getter>("disposed"),
      Napi::PropertyDescriptor::Accessor<version_getter>("version"),
      Napi::PropertyDescriptor::Accessor<device_getter>("device"),
      Napi::PropertyDescriptor::Accessor<dtype_getter>("dtype"),
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
  const int64_t words = storage_words(dtype, shape.numel());
  Napi::Object object =
      device == Device::kCpu
          ? create(env, shape, FloatBuffer(words), dtype)
          : construct(env, shape, std::make_shared<Storage>(backend_for(device), words, state(env).stats, dtype),
                      false);
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
  if (pending_storage == nullptr) {
    throw Napi::TypeError::New(info.Env(), "TensorHandle cannot be constructed directly; use Tensor.from()");
  }
  shape_ = *pending_shape;
  storage_ = *pending_storage;
  device_ = storage_->device;
  const bool is_view = pending_is_view;
  pending_storage = nullptr;
  pending_shape = nullptr;
  AddonState& addon = state(info.Env());
  stats_ = addon.stats;
  stats_->live_tensors.fetch_add(1, std::memory_order_relaxed);
  // V8 is told of host memory so that garbage collection (and with it the finaliser) runs under pressure, though not
  // at once (ExternalMemory). GPU memory is not reported: V8's heuristics are about host memory, and memory()
  // reports deviceBytes.
  host_bytes_ = is_view ? 0 : storage_->buffer.size() * static_cast<int64_t>(sizeof(float));
  if (host_bytes_ == 0) return;
  external_ = addon.external;
  epoch_ = external_->epoch;
  external_->unreported_bytes += host_bytes_;
  if (external_->unreported_bytes > ExternalMemory::kUnreportedLimit) report_external_memory(info.Env());
}

void TensorHandle::report_external_memory(Napi::Env env) {
  ExternalMemory& external = *state(env).external;
  if (external.unreported_bytes > 0) Napi::MemoryManagement::AdjustExternalMemory(env, external.unreported_bytes);
  external.unreported_bytes = 0;
  ++external.epoch;
}

void TensorHandle::forget_external_memory(Napi::Env env) {
  if (host_bytes_ == 0) return;
  if (epoch_ < external_->epoch) {
    Napi::MemoryManagement::AdjustExternalMemory(env, -host_bytes_);
  } else {
    external_->unreported_bytes -= host_bytes_;
  }
  host_bytes_ = 0;
}

void TensorHandle::Finalize(Napi::Env env) { forget_external_memory(env); }

TensorHandle::~TensorHandle() {
  // Run by destroy() or, for a handle never disposed, by the finaliser after garbage collection. Memory counters
  // live in shared state, so this is safe even when the environment is being torn down.
  storage_.reset();
  if (stats_) stats_->live_tensors.fetch_sub(1, std::memory_order_relaxed);
}

const float* TensorHandle::row_sq_norms() {
  const int64_t rows = shape_.rank == 0 ? 1 : shape_[0];
  return storage_->row_sq_norms(cpu_backend(), rows, rows == 0 ? 0 : numel() / rows);
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
  Napi::Env env = info.Env();
  TensorHandle& handle = this_handle(info, "read");
  const int64_t count = handle.numel();
  Napi::Float32Array copy = Napi::Float32Array::New(env, static_cast<size_t>(count));
  guarded(info, [&]() -> Napi::Value {
    handle.storage_->read_floats(copy.Data(), count, "read");
    return env.Undefined();
  });
  return copy;
}

Napi::Value TensorHandle::write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorHandle& handle = this_handle(info, "write");
  Napi::Float32Array data;
  guarded(info, [&]() -> Napi::Value {
    data = parse("write", "data", info[0], static_cast<Napi::Float32Array*>(nullptr));
    return env.Undefined();
  });
  const int64_t count = handle.numel();
  if (static_cast<int64_t>(data.ElementLength()) != count) {
    throw Napi::RangeError::New(env, "write: data has " + std::to_string(data.ElementLength()) +
                                         " elements but the tensor has shape " + handle.shape().str());
  }
  // Bumped first: even a copy that fails halfway has changed what backward would read.
  handle.mark_modified();
  guarded(info, [&]() -> Napi::Value {
    handle.storage_->write_floats(data.Data(), count, "write");
    return env.Undefined();
  });
  return env.Undefined();
}

Napi::Value TensorHandle::dispose(const Napi::CallbackInfo& info) {
  TensorHandle* handle = live(info.Env(), info.This());
  if (handle != nullptr) handle->destroy(info.Env(), info.This().As<Napi::Object>());
  return info.Env().Undefined();
}

Napi::Value TensorHandle::shape_getter(const Napi::CallbackInfo& info) {
  const Shape& shape = this_handle(info, "shape").shape();
  Napi::Array dims = Napi::Array::New(info.Env(), shape.rank);
  for (int axis = 0; axis < shape.rank; ++axis) {
    dims.Set(static_cast<uint32_t>(axis), Napi::Number::New(info.Env(), static_cast<double>(shape.dims[axis])));
  }
  return dims;
}

Napi::Value TensorHandle::version_getter(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(this_handle(info, "version").version()));
}

Napi::Value TensorHandle::device_getter(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), device_name(this_handle(info, "device").device()));
}

Napi::Value TensorHandle::dtype_getter(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), dtype_name(this_handle(info, "dtype").dtype()));
}

Napi::Value TensorHandle::disposed_getter(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), live(info.Env(), info.This()) == nullptr);
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

Napi::Value full(const Call& call, C& op) {
  FloatBuffer buffer(op.shape.numel(), op.value == 0.0);
  if (op.value != 0.0) std::fill(buffer.data(), buffer.data() + op.shape.numel(), static_cast<float>(op.value));
  return TensorHandle::create(call.env, op.shape, std::move(buffer));
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
      FloatBuffer words(storage_words(DType::kBfloat16, op.shape.numel()), true);
      std::memcpy(words.data(), op.bits.Data(), op.bits.ElementLength() * sizeof(Bf16));
      return TensorHandle::create(call.env, op.shape, std::move(words), DType::kBfloat16);
    },
    "Tensor.fromBFloat16");
const OpSpec<C> kFull("full", Runs::kCpu, nullptr, {shape(), arg<&C::value>("value")}, nullptr, full, "Tensor.full");
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
