// The native tensor handle and the functions that create tensors.
#include "tensor_handle.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "../cpu/dora.h"
#include "../cpu/random.h"
#include "args.h"
#include "gpu.h"

namespace bidora::binding {

const char* device_name(Device device) { return device == Device::kCuda ? "cuda" : "cpu"; }

Device usable_device(const std::string& name, const std::string& where) {
  if (name == "cpu") return Device::kCpu;
  if (name != "cuda") throw RangeError(where + " must be 'cpu' or 'cuda', got '" + name + "'");
#if BIDORA_HAVE_CUDA
  // Asked once per process: the answer does not change while it runs.
  static const bool usable = cuda::usable_device_count() > 0;
  if (!usable) {
    throw RangeError(where + " 'cuda' is not available: no GPU of compute capability 8.0 or newer is usable here " +
                     "(devices() lists what is)");
  }
  return Device::kCuda;
#else
  throw RangeError(where + " 'cuda' is not available: this build of bidora has no CUDA kernels (built without " +
                   "nvcc, or with BIDORA_CUDA=OFF)");
#endif
}

Storage::Storage(int64_t count, std::shared_ptr<MemoryStats> stats) : device(Device::kCuda), gpu_count(count) {
#if BIDORA_HAVE_CUDA
  gpu = cuda::allocate_floats(count, "Tensor");
#else
  throw RangeError("Tensor: this build of bidora has no CUDA kernels");
#endif
  gpu_stats = std::move(stats);
  if (gpu_stats) gpu_stats->device_bytes.fetch_add(count * static_cast<int64_t>(sizeof(float)));
}

Storage::~Storage() {
#if BIDORA_HAVE_CUDA
  cuda::free_floats(gpu);
  cuda::free_floats(gpu_row_sq_norms);
#endif
  if (gpu_stats) gpu_stats->device_bytes.fetch_sub(gpu_count * static_cast<int64_t>(sizeof(float)));
}

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
  if (handle == nullptr) throw_type_error(info.Env(), std::string(function) + ": the tensor is disposed");
  return *handle;
}

Napi::Object TensorHandle::create(Napi::Env env, const Shape& shape, FloatBuffer buffer) {
  return construct(env, shape, std::make_shared<Storage>(std::move(buffer)), false);
}

Napi::Object TensorHandle::view(Napi::Env env, const Shape& shape) { return construct(env, shape, storage_, true); }

Napi::Object TensorHandle::allocate(Napi::Env env, const Shape& shape, TensorHandle** handle, Device device) {
  Napi::Object object = device == Device::kCpu
                            ? create(env, shape, FloatBuffer(shape.numel()))
                            : construct(env, shape, std::make_shared<Storage>(shape.numel(), state(env).stats), false);
  *handle = Unwrap(object);
  return object;
}

Napi::Object TensorHandle::copy_to(Napi::Env env, Device device, const char* function) {
  TensorHandle* copy = nullptr;
  Napi::Object object = allocate(env, shape_, &copy, device);
  const int64_t count = numel();
  if (device == Device::kCpu && this->device() == Device::kCpu) {
    if (count > 0) std::memcpy(copy->data(), data(), static_cast<size_t>(count) * sizeof(float));
    return object;
  }
#if BIDORA_HAVE_CUDA
  if (device == Device::kCpu) {
    cuda::copy_to_host(copy->data(), data(), count, function);
  } else if (this->device() == Device::kCpu) {
    cuda::copy_to_device(copy->data(), data(), count, function);
  } else {
    cuda::copy_on_device(copy->data(), data(), count, function);
  }
#else
  (void)function;
#endif
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
  stats_ = state(info.Env()).stats;
  stats_->live_tensors.fetch_add(1, std::memory_order_relaxed);
  // Tell V8 about native memory so that garbage collection (and with it the finaliser) runs under pressure.
  // GPU memory is not reported: V8's heuristics are about host memory, and memory() reports deviceBytes.
  reported_bytes_ = is_view ? 0 : storage_->buffer.size() * static_cast<int64_t>(sizeof(float));
  if (reported_bytes_ > 0) Napi::MemoryManagement::AdjustExternalMemory(info.Env(), reported_bytes_);
}

TensorHandle::~TensorHandle() {
  // Run by destroy() or, for a handle never disposed, by the finaliser after garbage collection. Memory counters
  // live in shared state, so this is safe even when the environment is being torn down.
  storage_.reset();
  if (stats_) stats_->live_tensors.fetch_sub(1, std::memory_order_relaxed);
}

const float* TensorHandle::row_sq_norms() {
  Storage& storage = *storage_;
  const int64_t rows = shape_.rank == 0 ? 1 : shape_[0];
  const int64_t cols = rows == 0 ? 0 : numel() / rows;
  const bool stale = storage.row_sq_norms_rows != rows || storage.row_sq_norms_version != storage.version;
#if BIDORA_HAVE_CUDA
  if (storage.device == Device::kCuda) {
    if (stale) {
      if (storage.row_sq_norms_rows != rows) {
        cuda::free_floats(storage.gpu_row_sq_norms);
        storage.gpu_row_sq_norms = nullptr;
        storage.row_sq_norms_rows = -1;  // stale until the allocation below succeeds
        storage.gpu_row_sq_norms = cuda::allocate_floats(rows, "row norms");
      }
      cuda::row_sq_norms(storage.gpu_row_sq_norms, storage.gpu, rows, cols, nullptr);
      cuda::check_launch("row norms");
      storage.row_sq_norms_rows = rows;
      storage.row_sq_norms_version = storage.version;
    }
    return storage.gpu_row_sq_norms;
  }
#endif
  if (stale) {
    if (storage.row_sq_norms.size() != rows) storage.row_sq_norms = FloatBuffer(rows);
    cpu::row_sq_norms(storage.row_sq_norms.data(), storage.buffer.data(), rows, cols);
    storage.row_sq_norms_rows = rows;
    storage.row_sq_norms_version = storage.version;
  }
  return storage.row_sq_norms.data();
}

void TensorHandle::destroy(Napi::Env env, Napi::Object object) {
  storage_.reset();
  if (reported_bytes_ > 0) Napi::MemoryManagement::AdjustExternalMemory(env, -reported_bytes_);
  reported_bytes_ = 0;
  // Without its wrap the object owes the finaliser nothing; ~ObjectWrap then deletes the reference napi_wrap made.
  // What is left until garbage collection is the bare JavaScript object.
  if (napi_remove_wrap(env, object, nullptr) != napi_ok) {
    throw_type_error(env, "dispose: the tensor handle could not be detached");
  }
  delete this;
}

Napi::Value TensorHandle::read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorHandle& handle = this_handle(info, "read");
  const int64_t count = handle.numel();
  Napi::Float32Array copy = Napi::Float32Array::New(env, static_cast<size_t>(count));
  guarded(info, [&]() -> Napi::Value {
#if BIDORA_HAVE_CUDA
    if (handle.device() == Device::kCuda) {
      cuda::copy_to_host(copy.Data(), handle.data(), count, "read");
      return env.Undefined();
    }
#endif
    if (count > 0) std::memcpy(copy.Data(), handle.data(), static_cast<size_t>(count) * sizeof(float));
    return env.Undefined();
  });
  return copy;
}

Napi::Value TensorHandle::write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorHandle& handle = this_handle(info, "write");
  Napi::Float32Array data = float32_arg({info, 0, "write", "data"});
  const int64_t count = handle.numel();
  if (static_cast<int64_t>(data.ElementLength()) != count) {
    throw_range_error(env, "write: data has " + std::to_string(data.ElementLength()) +
                               " elements but the tensor has shape " + handle.shape().str());
  }
  // Bumped first: even a copy that fails halfway has changed what backward would read.
  handle.mark_modified();
  guarded(info, [&]() -> Napi::Value {
#if BIDORA_HAVE_CUDA
    if (handle.device() == Device::kCuda) {
      cuda::copy_to_device(handle.data(), data.Data(), count, "write");
      return env.Undefined();
    }
#endif
    if (count > 0) std::memcpy(handle.data(), data.Data(), static_cast<size_t>(count) * sizeof(float));
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

Napi::Value TensorHandle::disposed_getter(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), live(info.Env(), info.This()) == nullptr);
}

namespace {

// [sync] fromFloat32Array(data: Float32Array, shape: number[]): TensorHandle - copies data.
// Throws TypeError (not a Float32Array, bad shape entries), RangeError (length does not match the shape).
Napi::Value from_float32_array(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Napi::Float32Array data = float32_arg({info, 0, "Tensor.from", "data"});
    const Shape shape = shape_arg({info, 1, "Tensor.from", "shape"});
    if (static_cast<int64_t>(data.ElementLength()) != shape.numel()) {
      throw_range_error(info.Env(), "Tensor.from: data has " + std::to_string(data.ElementLength()) +
                                        " elements but shape " + shape.str() + " needs " +
                                        std::to_string(shape.numel()));
    }
    FloatBuffer buffer(shape.numel());
    if (shape.numel() > 0) {
      std::memcpy(buffer.data(), data.Data(), static_cast<size_t>(shape.numel()) * sizeof(float));
    }
    return TensorHandle::create(info.Env(), shape, std::move(buffer));
  });
}

// [sync] full(shape: number[], value: number): TensorHandle. Throws TypeError/RangeError for a bad shape or value.
Napi::Value full(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const Shape shape = shape_arg({info, 0, "Tensor.full", "shape"});
    const double value = number_arg({info, 1, "Tensor.full", "value"});
    FloatBuffer buffer(shape.numel(), value == 0.0);
    if (value != 0.0) std::fill(buffer.data(), buffer.data() + shape.numel(), static_cast<float>(value));
    return TensorHandle::create(info.Env(), shape, std::move(buffer));
  });
}

constexpr int64_t kMaxSafeInteger = 9007199254740991;

// [sync] randn(shape: number[], seed: number, mean: number, std: number): TensorHandle - seeded normal samples.
Napi::Value randn(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const Shape shape = shape_arg({info, 0, "Tensor.randn", "shape"});
    const int64_t seed = integer_arg({info, 1, "Tensor.randn", "seed"}, 0, kMaxSafeInteger);
    const double mean = number_arg({info, 2, "Tensor.randn", "mean"});
    const double stddev = number_arg({info, 3, "Tensor.randn", "std"});
    if (stddev < 0) throw_range_error(info.Env(), "Tensor.randn: std must be non-negative");
    FloatBuffer buffer(shape.numel());
    cpu::fill_normal(buffer.data(), shape.numel(), static_cast<uint64_t>(seed), static_cast<float>(mean),
                     static_cast<float>(stddev));
    return TensorHandle::create(info.Env(), shape, std::move(buffer));
  });
}

// [sync] uniform(shape: number[], seed: number, low: number, high: number): TensorHandle - seeded U[low, high).
Napi::Value uniform(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const Shape shape = shape_arg({info, 0, "Tensor.uniform", "shape"});
    const int64_t seed = integer_arg({info, 1, "Tensor.uniform", "seed"}, 0, kMaxSafeInteger);
    const double low = number_arg({info, 2, "Tensor.uniform", "low"});
    const double high = number_arg({info, 3, "Tensor.uniform", "high"});
    if (!(low < high)) throw_range_error(info.Env(), "Tensor.uniform: low must be below high");
    FloatBuffer buffer(shape.numel());
    cpu::fill_uniform(buffer.data(), shape.numel(), static_cast<uint64_t>(seed), static_cast<float>(low),
                      static_cast<float>(high));
    return TensorHandle::create(info.Env(), shape, std::move(buffer));
  });
}

// [sync] reshape(x, shape: number[]): TensorHandle - a view of x's storage with another shape of the same size
// (no copy; in-place changes show through every view), on x's device. Throws TypeError, RangeError (sizes differ).
Napi::Value reshape(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    TensorHandle& x = any_tensor_arg({info, 0, "reshape", "x"});
    const Shape shape = shape_arg({info, 1, "reshape", "shape"});
    if (shape.numel() != x.numel()) {
      throw RangeError("reshape: " + describe("x", x.shape()) + " (" + std::to_string(x.numel()) +
                       " elements), which shape " + shape.str() + " cannot hold");
    }
    return x.view(info.Env(), shape);
  });
}

// [sync] toDevice(x, device: 'cpu' | 'cuda'): TensorHandle - a copy of x on `device` (also when x is there already).
// Throws TypeError (not a live tensor, device not a string), RangeError (unknown device, or 'cuda' unusable here).
Napi::Value to_device(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    TensorHandle& x = any_tensor_arg({info, 0, "Tensor.to", "x"});
    const Device device = usable_device(string_arg({info, 1, "Tensor.to", "device"}), "Tensor.to: device");
    return x.copy_to(info.Env(), device, "Tensor.to");
  });
}

}  // namespace

void register_creation(Napi::Env env, Napi::Object exports) {
  exports.Set("toDevice", Napi::Function::New<to_device>(env, "toDevice"));
  exports.Set("reshape", Napi::Function::New<reshape>(env, "reshape"));
  exports.Set("fromFloat32Array", Napi::Function::New<from_float32_array>(env, "fromFloat32Array"));
  exports.Set("full", Napi::Function::New<full>(env, "full"));
  exports.Set("randn", Napi::Function::New<randn>(env, "randn"));
  exports.Set("uniform", Napi::Function::New<uniform>(env, "uniform"));
}

}  // namespace bidora::binding
