// Argument checks shared by every native entry point.
#include "args.h"

#include <cmath>

#include "tensor_handle.h"

namespace bidora::binding {

AddonState& state(Napi::Env env) { return *env.GetInstanceData<AddonState>(); }

void throw_type_error(Napi::Env env, const std::string& message) { throw Napi::TypeError::New(env, message); }

void throw_range_error(Napi::Env env, const std::string& message) { throw Napi::RangeError::New(env, message); }

TensorHandle& tensor_value(Napi::Env env, Napi::Value value, const std::string& where, bool any_device) {
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(state(env).tensor_constructor.Value())) {
    throw_type_error(env, where + " must be a Tensor");
  }
  TensorHandle* handle = TensorHandle::live(env, value);
  if (handle == nullptr) throw_type_error(env, where + " is a disposed Tensor");
  if (!any_device && handle->device() != Device::kCpu) {
    throw_type_error(env, where + " is on '" + device_name(handle->device()) +
                              "', but this op runs on the CPU only; move it with .to('cpu')");
  }
  return *handle;
}

TensorHandle& tensor_arg(const Arg& arg) { return tensor_value(arg.info.Env(), arg.value(), arg.where()); }

TensorHandle* optional_tensor_arg(const Arg& arg) { return arg.missing() ? nullptr : &tensor_arg(arg); }

TensorHandle& any_tensor_arg(const Arg& arg) { return tensor_value(arg.info.Env(), arg.value(), arg.where(), true); }

TensorHandle* optional_any_tensor_arg(const Arg& arg) { return arg.missing() ? nullptr : &any_tensor_arg(arg); }

Device same_device(const char* function, std::initializer_list<NamedTensor> tensors) {
  const NamedTensor* first = nullptr;
  for (const NamedTensor& entry : tensors) {
    if (entry.tensor == nullptr) continue;
    if (first == nullptr) {
      first = &entry;
    } else if (entry.tensor->device() != first->tensor->device()) {
      throw TypeError(std::string(function) + ": " + first->name + " is on '" + device_name(first->tensor->device()) +
                      "' but " + entry.name + " is on '" + device_name(entry.tensor->device()) +
                      "'; move one with .to() so both are on the same device");
    }
  }
  return first == nullptr ? Device::kCpu : first->tensor->device();
}

double number_arg(const Arg& arg) {
  Napi::Env env = arg.info.Env();
  if (!arg.value().IsNumber()) throw_type_error(env, arg.where() + " must be a number");
  const double number = arg.value().As<Napi::Number>().DoubleValue();
  if (!std::isfinite(number)) throw_range_error(env, arg.where() + " must be finite, got " + std::to_string(number));
  return number;
}

int64_t integer_arg(const Arg& arg, int64_t min, int64_t max) {
  const double number = number_arg(arg);
  if (number != std::floor(number) || number < static_cast<double>(min) || number > static_cast<double>(max)) {
    throw_range_error(arg.info.Env(), arg.where() + " must be an integer from " + std::to_string(min) + " to " +
                                          std::to_string(max) + ", got " + std::to_string(number));
  }
  return static_cast<int64_t>(number);
}

bool boolean_arg(const Arg& arg, bool fallback) {
  if (arg.missing()) return fallback;
  if (!arg.value().IsBoolean()) throw_type_error(arg.info.Env(), arg.where() + " must be a boolean");
  return arg.value().As<Napi::Boolean>().Value();
}

std::string string_arg(const Arg& arg) {
  if (!arg.value().IsString()) throw_type_error(arg.info.Env(), arg.where() + " must be a string");
  return arg.value().As<Napi::String>().Utf8Value();
}

Shape shape_arg(const Arg& arg) {
  Napi::Env env = arg.info.Env();
  if (!arg.value().IsArray()) throw_type_error(env, arg.where() + " must be an array of dimensions");
  Napi::Array array = arg.value().As<Napi::Array>();
  if (array.Length() > static_cast<uint32_t>(kMaxRank)) {
    throw_range_error(
        env, arg.where() + ": rank " + std::to_string(array.Length()) + " is not supported (expected rank 0 to 4)");
  }
  std::vector<int64_t> dims;
  for (uint32_t axis = 0; axis < array.Length(); ++axis) {
    Napi::Value dim = array.Get(axis);
    if (!dim.IsNumber()) {
      throw_type_error(env, arg.where() + ": dimension " + std::to_string(axis) + " must be a number");
    }
    const double value = dim.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(value) || value < 0 || value != std::floor(value) || value > 9007199254740991.0) {
      throw_range_error(env, arg.where() + ": dimension " + std::to_string(axis) + " is " + dim.ToString().Utf8Value() +
                                 " (expected a non-negative integer)");
    }
    dims.push_back(static_cast<int64_t>(value));
  }
  return Shape::from(dims, arg.where().c_str());
}

Napi::Float32Array float32_arg(const Arg& arg) {
  Napi::Value value = arg.value();
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    throw_type_error(arg.info.Env(), arg.where() + " must be a Float32Array");
  }
  return value.As<Napi::Float32Array>();
}

}  // namespace bidora::binding
