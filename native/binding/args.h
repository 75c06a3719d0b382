// What every native entry point shares: the per-environment state, the tensor check, and guarded(), which turns
// every C++ exception into a JavaScript error.
#pragma once

#include <napi.h>

#include <cstdint>
#include <exception>
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

// A live tensor handle (TypeError naming `where` if not a tensor or disposed); with any_device false, on the CPU
// only (TypeError saying to move it).
TensorHandle& tensor_value(Napi::Env env, Napi::Value value, const std::string& where, bool any_device = false);

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
  } catch (...) {
    // Not a std::exception (a library's own type, a thrown int): nothing to say but that it happened.
    throw Napi::Error::New(env, "bidora: native error: an unknown C++ exception");
  }
}

}  // namespace bidora::binding
