// The per-environment state and the tensor check every entry point shares.
#include "args.h"

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

}  // namespace bidora::binding
