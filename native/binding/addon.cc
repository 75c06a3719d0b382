// Module entry: per-environment state, build information and the process-wide knobs (ISA path, threads).
#include <napi.h>

#include <exception>
#include <new>
#include <stdexcept>
#include <string>

#include "../core/cpu_features.h"
#include "../core/threadpool.h"
#include "op.h"

#ifndef BIDORA_VERSION
#define BIDORA_VERSION "0.0.0"
#endif

namespace bidora::binding {

namespace {

// [sync] buildInfo(): { version, isaCompiled: string[], isaSupported: string[], isa, threads, poolThreads,
// poolThreadsRequested, cuda }
Napi::Value build_info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object result = Napi::Object::New(env);
  result.Set("version", BIDORA_VERSION);
  Napi::Array compiled = Napi::Array::New(env);
  Napi::Array supported = Napi::Array::New(env);
  for (Isa isa : {Isa::Generic, Isa::Avx2, Isa::Avx512}) {
    if (isa_compiled(isa)) compiled.Set(compiled.Length(), isa_name(isa));
    if (isa_supported(isa)) supported.Set(supported.Length(), isa_name(isa));
  }
  result.Set("isaCompiled", compiled);
  result.Set("isaSupported", supported);
  result.Set("isa", isa_name(active_isa()));
  result.Set("threads", num_threads());
  result.Set("poolThreads", pool_size());
  result.Set("poolThreadsRequested", requested_pool_size());
  result.Set("cuda", cuda_backend() != nullptr);
  return result;
}

// [sync] devices(): string[] - where kernels can run: 'cpu', then 'cuda' when the addon was built with CUDA and a
// GPU of compute capability 8.0 or newer is usable now. Never throws: no GPU or no driver gives ['cpu'].
Napi::Value devices(const Napi::CallbackInfo& info) {
  Napi::Array result = Napi::Array::New(info.Env());
  result.Set(0u, "cpu");
  const ops::Backend* cuda = cuda_backend();
  if (cuda != nullptr && cuda->usable_device_count() > 0) result.Set(1u, "cuda");
  return result;
}

// [sync] setIsa(name: 'generic' | 'avx2' | 'avx512'): string - the previous path. Process-wide.
// Throws TypeError (not a string), RangeError (unknown name, or not runnable on this CPU).
Napi::Value set_isa(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const Isa isa = parse_isa(read_string("setIsa", "isa", info[0]), "setIsa: isa");
    const Isa previous = active_isa();
    set_active_isa(isa);
    return Napi::String::New(info.Env(), isa_name(previous));
  });
}

// [sync] setNumThreads(threads: number): number - caps the threads jobs use; a cap above the pool size means the
// whole pool. Returns the previous cap. Process-wide. Throws TypeError, RangeError (not an integer from 1 to 2^20).
Napi::Value set_num_threads(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const int64_t threads = read_integer("setNumThreads", "threads", info[0], closed(1, 1 << 20));
    return Napi::Number::New(info.Env(), set_thread_limit(static_cast<int>(threads)));
  });
}

// [sync] memory(): { tensors, buffers, bytes, peakBytes, workspaceBytes, cachedBytes, deviceBytes } - native memory
// of this environment (tensors, caches and kernel scratch), the process's reusable kernel workspaces and freed
// buffers kept for reuse, and this environment's GPU memory.
Napi::Value memory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const MemoryStats& stats = *state(env).stats;
  Napi::Object result = Napi::Object::New(env);
  result.Set("tensors", static_cast<double>(stats.live_tensors.load()));
  result.Set("buffers", static_cast<double>(stats.live_buffers.load()));
  result.Set("bytes", static_cast<double>(stats.live_bytes.load()));
  result.Set("peakBytes", static_cast<double>(stats.peak_bytes.load()));
  result.Set("workspaceBytes", static_cast<double>(workspace_bytes()));
  result.Set("cachedBytes", static_cast<double>(cached_bytes()));
  result.Set("deviceBytes", static_cast<double>(stats.device_bytes.load()));
  return result;
}

// [sync] emptyCache(): number - hands the freed buffers kept for reuse back to the system; returns their bytes.
Napi::Value empty_cache(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(release_cached_memory()));
}

// [sync] resetPeakMemory(): void - peakBytes restarts from the bytes live now.
Napi::Value reset_peak_memory(const Napi::CallbackInfo& info) {
  state(info.Env()).stats->reset_peak();
  return info.Env().Undefined();
}

// [sync] setCacheLimit(bytes: number): number - the most bytes of freed buffers kept for reuse, process-wide (0 turns
// the cache off; the oldest kept blocks are freed down to it); returns the previous limit. Throws TypeError,
// RangeError (not an integer from 0 to 2^53 − 1).
Napi::Value set_buffer_cache_limit(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const int64_t bytes = read_integer("setCacheLimit", "bytes", info[0], closed(0, kMaxSafeInteger));
    return Napi::Number::New(info.Env(), static_cast<double>(bidora::set_cache_limit(bytes)));
  });
}

// A non-std exception: what a third-party library might throw.
struct Foreign {
  int code;
};

// [sync] _throwForTest(kind): never returns - throws the C++ exception `kind` names, under guarded() as every entry
// point, to prove each reaches JavaScript as an error instead of ending the process (test/op-contract.test.ts). Kinds:
// 'length_error', 'runtime_error', 'range_error' (bidora::RangeError), 'type_error' (bidora::TypeError), 'bad_alloc',
// 'int' (throw 42), 'foreign' (a plain struct). Test-only: not in lib/binding.ts's public surface.
Napi::Value throw_for_test(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const std::string kind = read_string("_throwForTest", "kind", info[0]);
    if (kind == "length_error") throw std::length_error("vector::reserve");
    if (kind == "runtime_error") throw std::runtime_error("a failed system call");
    if (kind == "range_error") throw RangeError("_throwForTest: a bidora RangeError");
    if (kind == "type_error") throw bidora::TypeError("_throwForTest: a bidora TypeError");
    if (kind == "bad_alloc") throw std::bad_alloc();
    if (kind == "int") throw 42;
    if (kind == "foreign") throw Foreign{7};
    throw RangeError("_throwForTest: unknown kind '" + kind + "'");
  });
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
  auto* addon_state = new AddonState();
  env.SetInstanceData(addon_state);
  // A bad BIDORA_ISA or BIDORA_NUM_THREADS fails here, at require(), with its own message; so does anything else
  // the first use of the thread pool throws, rather than ending the process.
  try {
    (void)active_isa();
    (void)num_threads();
  } catch (const bidora::RangeError& error) {
    throw Napi::RangeError::New(env, error.what());
  } catch (const std::bad_alloc&) {
    throw Napi::RangeError::New(env, "bidora: out of memory while starting the thread pool");
  } catch (const std::exception& error) {
    throw Napi::Error::New(env, std::string("bidora: the thread pool could not start: ") + error.what());
  }
  Napi::Function tensor_class = TensorHandle::define(env);
  addon_state->tensor_constructor = Napi::Persistent(tensor_class);
  exports.Set("TensorHandle", tensor_class);
  exports.Set("buildInfo", Napi::Function::New<build_info>(env, "buildInfo"));
  exports.Set("devices", Napi::Function::New<devices>(env, "devices"));
  exports.Set("setIsa", Napi::Function::New<set_isa>(env, "setIsa"));
  exports.Set("setNumThreads", Napi::Function::New<set_num_threads>(env, "setNumThreads"));
  exports.Set("memory", Napi::Function::New<memory>(env, "memory"));
  exports.Set("resetPeakMemory", Napi::Function::New<reset_peak_memory>(env, "resetPeakMemory"));
  exports.Set("emptyCache", Napi::Function::New<empty_cache>(env, "emptyCache"));
  exports.Set("setCacheLimit", Napi::Function::New<set_buffer_cache_limit>(env, "setCacheLimit"));
  exports.Set("_throwForTest", Napi::Function::New<throw_for_test>(env, "_throwForTest"));
  register_op_list(env, exports);
  register_creation(env, exports);
  register_linear_algebra(env, exports);
  register_elementwise(env, exports);
  register_adapter(env, exports);
  register_nn(env, exports);
  register_decoder(env, exports);
  register_optim(env, exports);
  return exports;
}

}  // namespace

}  // namespace bidora::binding

static Napi::Object InitBidora(Napi::Env env, Napi::Object exports) { return bidora::binding::init(env, exports); }

NODE_API_MODULE(bidora, InitBidora)
