// The generic reader and dispatcher of op.h: argument kinds, the device check, the backends, the op list.
#include "op.h"

#include <algorithm>
#include <cmath>

#include "../cpu/backend.h"
#include "../cuda/backend.h"

namespace bidora::binding {

AddonState& state(Napi::Env env) { return *env.GetInstanceData<AddonState>(); }

// ---- backends ------------------------------------------------------------------------------------------------------

const ops::Backend& cpu_backend() { return cpu::backend(); }

const ops::Backend* cuda_backend() {
#if defined(BIDORA_HAVE_CUDA) && BIDORA_HAVE_CUDA
  return &cuda::backend();
#else
  return nullptr;
#endif
}

const ops::Backend& backend_for(Device device, const char* fn, bool (*has_kernel)(const ops::Backend&)) {
  return select_backend(device, cpu_backend(), cuda_backend(), fn, has_kernel);
}

// ---- reading one value ---------------------------------------------------------------------------------------------

std::string where(const char* fn, const char* name) { return std::string(fn) + ": " + name; }

bool missing(Napi::Value value) { return value.IsUndefined() || value.IsNull(); }

void gather(Gathered& gathered, const FieldInfo& field, int64_t index, TensorHandle* tensor) {
  gathered.tensors.push_back({field.name, index, tensor->device(), tensor->data(), tensor->words(), field.written});
  if (field.written) gathered.written.push_back(tensor);
}

TensorHandle* read_tensor(const char* fn, const char* name, Napi::Env env, Napi::Value value) {
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(state(env).tensor_constructor.Value())) {
    throw bidora::TypeError(where(fn, name) + " must be a Tensor");
  }
  TensorHandle* handle = TensorHandle::live(env, value);
  if (handle == nullptr) throw bidora::TypeError(where(fn, name) + " is a disposed Tensor");
  return handle;
}

void read_tensor_list(const char* fn, const FieldInfo& field, Napi::Env env, Napi::Value value, TensorList& list,
                      Gathered& gathered) {
  list = TensorList{};
  if (field.optional && missing(value)) return;
  if (!value.IsArray()) throw bidora::TypeError(where(fn, field.name) + " must be an array of Tensors");
  Napi::Array array = value.As<Napi::Array>();
  list.present = true;
  for (uint32_t position = 0; position < array.Length(); ++position) {
    const std::string element = std::string(field.name) + "[" + std::to_string(position) + "]";
    TensorHandle* handle = read_tensor(fn, element.c_str(), env, array.Get(position));
    require_float32(fn, element.c_str(), field, handle);
    gather(gathered, field, position, handle);
    list.data.push_back(handle->data());
    list.lengths.push_back(handle->numel());
    list.shapes.push_back(handle->shape());
  }
}

double read_number(const char* fn, const char* name, Napi::Value value, const Bounds& bounds) {
  if (!value.IsNumber()) throw bidora::TypeError(where(fn, name) + " must be a number");
  return rules::number_in(fn, name, value.As<Napi::Number>().DoubleValue(), bounds);
}

int64_t read_integer(const char* fn, const char* name, Napi::Value value, const Bounds& bounds) {
  return rules::integer_in(fn, name, read_number(fn, name, value, kFinite), bounds);
}

bool read_boolean(const char* fn, const char* name, Napi::Value value) {
  if (!value.IsBoolean()) throw bidora::TypeError(where(fn, name) + " must be a boolean");
  return value.As<Napi::Boolean>().Value();
}

Shape parse(const char* fn, const char* name, Napi::Value value, Shape*) {
  const std::string at = where(fn, name);
  if (!value.IsArray()) throw bidora::TypeError(at + " must be an array of dimensions");
  Napi::Array array = value.As<Napi::Array>();
  if (array.Length() > static_cast<uint32_t>(kMaxRank)) {
    throw RangeError(at + ": rank " + std::to_string(array.Length()) + " is not supported (expected rank 0 to 4)");
  }
  std::vector<int64_t> dims;
  for (uint32_t axis = 0; axis < array.Length(); ++axis) {
    Napi::Value dim = array.Get(axis);
    if (!dim.IsNumber()) throw bidora::TypeError(at + ": dimension " + std::to_string(axis) + " must be a number");
    const double size = dim.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(size) || size < 0 || size != std::floor(size) || size > 9007199254740991.0) {
      throw RangeError(at + ": dimension " + std::to_string(axis) + " is " + dim.ToString().Utf8Value() +
                       " (expected a non-negative integer)");
    }
    dims.push_back(static_cast<int64_t>(size));
  }
  return Shape::from(dims, at.c_str());
}

namespace {
template <typename Array>
Array typed_array(const char* fn, const char* name, Napi::Value value, napi_typedarray_type type, const char* what) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != type) {
    throw bidora::TypeError(where(fn, name) + " must be " + what);
  }
  return value.As<Array>();
}
}  // namespace

IntArray parse(const char* fn, const char* name, Napi::Value value, IntArray*) {
  auto array = typed_array<Napi::Int32Array>(fn, name, value, napi_int32_array, "an Int32Array");
  return {array.Data(), static_cast<int64_t>(array.ElementLength())};
}

Napi::Float32Array parse(const char* fn, const char* name, Napi::Value value, Napi::Float32Array*) {
  return typed_array<Napi::Float32Array>(fn, name, value, napi_float32_array, "a Float32Array");
}

Napi::Uint16Array parse(const char* fn, const char* name, Napi::Value value, Napi::Uint16Array*) {
  return typed_array<Napi::Uint16Array>(fn, name, value, napi_uint16_array, "a Uint16Array");
}

std::string parse(const char* fn, const char* name, Napi::Value value, std::string*) {
  if (!value.IsString()) throw bidora::TypeError(where(fn, name) + " must be a string");
  return value.As<Napi::String>().Utf8Value();
}

// ---- the generic half of a call ------------------------------------------------------------------------------------

Napi::Object arguments_object(const Napi::CallbackInfo& info, const char* fn) {
  if (info.Length() != 1 || !info[0].IsObject() || info[0].IsArray()) {
    throw bidora::TypeError(std::string(fn) + ": expected one object of named arguments");
  }
  return info[0].As<Napi::Object>();
}

void require_float32(const char* fn, const char* name, const FieldInfo& field, TensorHandle* tensor) {
  if (tensor->dtype() == DType::kFloat32 || field.bf16) return;
  throw bidora::TypeError(where(fn, name) + " is bfloat16, but this op takes float32 (bfloat16 holds frozen weights; " +
                          "convert with .to('float32'))");
}

Napi::Object Call::output(const Shape& shape, float** data, DType dtype) const {
  TensorHandle* handle = nullptr;
  Napi::Object object = TensorHandle::allocate(env, shape, &handle, device, dtype);
  *data = handle->data();
  return object;
}

// ---- the op list ---------------------------------------------------------------------------------------------------

std::vector<const OpBase*>& op_registry() {
  static std::vector<const OpBase*> registry;
  return registry;
}

namespace {

const char* const kKindNames[] = {"tensor",     "tensorList",   "number", "integer", "boolean",    "shape",
                                  "int32Array", "float32Array", "string", "flags",   "uint16Array"};

// [sync] ops(): every declared op with its arguments and whether each backend has its kernel (NativeOp[]).
Napi::Value list_ops(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const ops::Backend* cuda = cuda_backend();
  Napi::Array result = Napi::Array::New(env);
  for (const OpBase* op : op_registry()) {
    Napi::Object entry = Napi::Object::New(env);
    entry.Set("name", op->name);
    entry.Set("runs", op->runs == Runs::kAny ? "any" : "cpu");
    entry.Set("cpu", op->has_kernel == nullptr || op->has_kernel(cpu_backend()));
    entry.Set("cuda",
              op->runs == Runs::kAny && cuda != nullptr && (op->has_kernel == nullptr || op->has_kernel(*cuda)));
    Napi::Array args = Napi::Array::New(env);
    for (const FieldInfo& field : op->args) {
      Napi::Object arg = Napi::Object::New(env);
      arg.Set("name", field.name);
      arg.Set("kind", kKindNames[static_cast<int>(field.kind)]);
      arg.Set("optional", field.optional);
      arg.Set("written", field.written);
      if (field.bf16) arg.Set("bfloat16", true);
      args.Set(args.Length(), arg);
    }
    entry.Set("args", args);
    result.Set(result.Length(), entry);
  }
  return result;
}

}  // namespace

void export_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("ops", Napi::Function::New<list_ops>(env, "ops"));
  for (const OpBase* op : op_registry()) {
    auto function = [op](const Napi::CallbackInfo& info) { return op->run(info, *op); };
    exports.Set(op->name, Napi::Function::New(env, function, op->name));
  }
}

}  // namespace bidora::binding
