// Argument checks shared by every native entry point: each throws a TypeError or RangeError naming the argument.
#pragma once

#include <napi.h>

#include <cstdint>
#include <exception>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "../core/errors.h"
#include "../core/memory.h"
#include "../core/shape.h"

namespace bidora::binding {

class TensorHandle;
enum class Device;

// What one JavaScript environment (main thread or worker) keeps: its memory counters and the handle class.
struct AddonState {
  std::shared_ptr<MemoryStats> stats = std::make_shared<MemoryStats>();
  Napi::FunctionReference tensor_constructor;
};

AddonState& state(Napi::Env env);

[[noreturn]] void throw_type_error(Napi::Env env, const std::string& message);
[[noreturn]] void throw_range_error(Napi::Env env, const std::string& message);

// Argument `index` of a call to `function`, named `name` in messages.
struct Arg {
  const Napi::CallbackInfo& info;
  size_t index;
  const char* function;
  const char* name;

  Napi::Value value() const { return info[index]; }
  bool missing() const { return value().IsUndefined() || value().IsNull(); }
  std::string where() const { return std::string(function) + ": " + name; }
};

// A live tensor handle on the CPU (TypeError if not a tensor, disposed, or on another device: the op has no kernel
// there); `where` names it in messages. With any_device, a tensor on any device: the op checks that its tensors
// share one (same_device) and runs there.
TensorHandle& tensor_value(Napi::Env env, Napi::Value value, const std::string& where, bool any_device = false);
TensorHandle& tensor_arg(const Arg& arg);
// A tensor handle or nullptr when undefined/null.
TensorHandle* optional_tensor_arg(const Arg& arg);
TensorHandle& any_tensor_arg(const Arg& arg);
TensorHandle* optional_any_tensor_arg(const Arg& arg);

// The device every given tensor is on (null entries skipped); TypeError naming two that differ and their devices.
struct NamedTensor {
  const char* name;
  const TensorHandle* tensor;
};
Device same_device(const char* function, std::initializer_list<NamedTensor> tensors);
// A finite number (TypeError if not a number, RangeError if NaN or infinite).
double number_arg(const Arg& arg);
// An integer within [min, max] (RangeError naming the bounds).
int64_t integer_arg(const Arg& arg, int64_t min, int64_t max);
bool boolean_arg(const Arg& arg, bool fallback);
std::string string_arg(const Arg& arg);
// An array of non-negative integers (a shape), rank 0 to 4.
Shape shape_arg(const Arg& arg);
// A Float32Array, viewed without copying (byteOffset respected).
Napi::Float32Array float32_arg(const Arg& arg);

// Runs `body` with allocations charged to this environment and kernel errors turned into JavaScript errors: bidora's
// own as TypeError and RangeError, out of memory as RangeError, any other C++ exception (a failed system call, a
// library error) as Error with its message. Nothing thrown by a kernel may reach Node-API as a C++ exception.
template <typename Body>
Napi::Value guarded(const Napi::CallbackInfo& info, Body body) {
  Napi::Env env = info.Env();
  StatsScope scope(state(env).stats);
  try {
    return body();
  } catch (const bidora::TypeError& error) {
    throw_type_error(env, error.what());
  } catch (const bidora::RangeError& error) {
    throw_range_error(env, error.what());
  } catch (const std::bad_alloc&) {
    throw_range_error(env, "out of memory");
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& error) {
    throw Napi::Error::New(env, std::string("bidora: native error: ") + error.what());
  }
}

}  // namespace bidora::binding
