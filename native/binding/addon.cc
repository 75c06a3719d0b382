// Module entry: per-environment state, build information and the process-wide knobs (ISA path, threads, GPU
// product rounding).
#include <new>
#include <string>

#include "../core/cpu_features.h"
#include "../core/threadpool.h"
#include "../mpi/communicator.h"
#include "op.h"

#ifndef BIDORA_VERSION
#define BIDORA_VERSION "0.0.0"
#endif

namespace bidora::binding {

namespace {

// [sync] buildInfo(): what was compiled in and what runs now (lib/binding.ts's BuildInfo).
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
  result.Set("mpi", mpi::compiled());
  result.Set("avx512Bf16", cpu_has_avx512_bf16());
  return result;
}

// [sync] devices(): where kernels can run: 'cpu', then 'cuda' with CUDA kernels and a usable GPU. Never throws.
Napi::Value devices(const Napi::CallbackInfo& info) {
  Napi::Array result = Napi::Array::New(info.Env());
  result.Set(0u, "cpu");
  const ops::Backend* cuda = cuda_backend();
  if (cuda != nullptr && cuda->usable_device_count() > 0) result.Set(1u, "cuda");
  return result;
}

// [sync] setIsa(name): the previous path, process-wide. RangeError for an unknown name or one this CPU cannot run.
Napi::Value set_isa(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const Isa isa = parse_isa(read_string("setIsa", "isa", info[0]), "setIsa: isa");
    const Isa previous = active_isa();
    set_active_isa(isa);
    return Napi::String::New(info.Env(), isa_name(previous));
  });
}

// [sync] setNumThreads(threads): the previous cap on the threads jobs use (above the pool size: the whole pool).
Napi::Value set_num_threads(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const int64_t threads = read_integer("setNumThreads", "threads", info[0], closed(1, 1 << 20));
    return Napi::Number::New(info.Env(), set_thread_limit(static_cast<int>(threads)));
  });
}

// [sync] memory(): this environment's native and GPU memory, the process's kernel workspaces and cached buffers.
Napi::Value memory(const Napi::CallbackInfo& info) {
  Napi::Object result = Napi::Object::New(info.Env());
  for (const auto& [key, value] : memory_report(*state(info.Env()).stats)) result.Set(key, static_cast<double>(value));
  return result;
}

// [sync] emptyCache(): hands the cached freed buffers back to the system; returns their bytes.
Napi::Value empty_cache(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const ops::Backend* cuda = cuda_backend();
    const int64_t device_bytes = cuda != nullptr ? cuda->release_cached() : 0;
    return Napi::Number::New(info.Env(), static_cast<double>(release_cached_memory() + device_bytes));
  });
}

// [sync] reportExternalMemory(): void - tells V8 of the live tensors' host memory it has not been told of yet.
Napi::Value report_external_memory(const Napi::CallbackInfo& info) {
  TensorHandle::report_external_memory(info.Env());
  return info.Env().Undefined();
}

// [sync] resetPeakMemory(): void - peakBytes restarts from the bytes live now.
Napi::Value reset_peak_memory(const Napi::CallbackInfo& info) {
  state(info.Env()).stats->reset_peak();
  return info.Env().Undefined();
}

// [sync] setCacheLimit(bytes): the previous limit on cached freed buffers, process-wide (0: no cache).
Napi::Value set_buffer_cache_limit(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const int64_t bytes = read_integer("setCacheLimit", "bytes", info[0], closed(0, kMaxSafeInteger));
    return Napi::Number::New(info.Env(), static_cast<double>(bidora::set_cache_limit(bytes)));
  });
}

// [sync] setMatmulPrecision(precision): the previous setting, process-wide (../core/precision.h). RangeError for
// another name.
Napi::Value set_matmul_precision(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const std::string name = read_string("setMatmulPrecision", "precision", info[0]);
    return Napi::String::New(info.Env(), set_gemm_precision(name, "setMatmulPrecision: precision"));
  });
}

// [sync] _throwForTest(kind): throws the C++ exception `kind` names (../core/errors.h) under guarded(), as every entry
// point does (test/op-contract.test.ts). Test-only: not in lib/binding.ts's surface.
Napi::Value throw_for_test(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value { bidora::throw_for_test(read_string("_throwForTest", "kind", info[0])); });
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
  exports.Set("reportExternalMemory", Napi::Function::New<report_external_memory>(env, "reportExternalMemory"));
  exports.Set("resetPeakMemory", Napi::Function::New<reset_peak_memory>(env, "resetPeakMemory"));
  exports.Set("emptyCache", Napi::Function::New<empty_cache>(env, "emptyCache"));
  exports.Set("setCacheLimit", Napi::Function::New<set_buffer_cache_limit>(env, "setCacheLimit"));
  exports.Set("setMatmulPrecision", Napi::Function::New<set_matmul_precision>(env, "setMatmulPrecision"));
  exports.Set("_throwForTest", Napi::Function::New<throw_for_test>(env, "_throwForTest"));
  export_ops(env, exports);
  return exports;
}

}  // namespace

}  // namespace bidora::binding

static Napi::Object InitBidora(Napi::Env env, Napi::Object exports) { return bidora::binding::init(env, exports); }

NODE_API_MODULE(bidora, InitBidora)
