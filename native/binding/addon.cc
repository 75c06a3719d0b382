// Module entry: per-environment state, build information and the process-wide knobs (ISA path, threads, GPU
// product rounding).
#include <atomic>
#include <new>
#include <stdexcept>
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
  result.Set("bfloat16Bytes", static_cast<double>(stats.bf16_bytes.load()));
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

// As PyTorch's set_float32_matmul_precision: 'highest' keeps float32, 'high' rounds GPU products' inputs to TF32 and
// 'medium' to BF16 for the tensor cores (float32 accumulation either way). The CPU is always float32.
std::atomic<ops::Precision> matmul_precision{ops::Precision::kFloat32};
const char* const kPrecisionNames[] = {"highest", "high", "medium"};  // by ops::Precision

// [sync] setMatmulPrecision(precision): the previous setting, process-wide. RangeError for another name.
Napi::Value set_matmul_precision(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const std::string name = read_string("setMatmulPrecision", "precision", info[0]);
    for (int index = 0; index < 3; ++index) {
      if (name != kPrecisionNames[index]) continue;
      const ops::Precision previous = matmul_precision.exchange(static_cast<ops::Precision>(index));
      return Napi::String::New(info.Env(), kPrecisionNames[static_cast<int>(previous)]);
    }
    throw RangeError("setMatmulPrecision: precision must be 'highest', 'high' or 'medium', got '" + name + "'");
  });
}

// A non-std exception: what a third-party library might throw.
struct Foreign {
  int code;
};

// [sync] _throwForTest(kind): throws the C++ exception `kind` names under guarded(), as every entry point does, to
// prove each reaches JavaScript as an error (test/op-contract.test.ts). Test-only: not in lib/binding.ts's surface.
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

ops::Precision gemm_precision() { return matmul_precision.load(); }

}  // namespace bidora::binding

static Napi::Object InitBidora(Napi::Env env, Napi::Object exports) { return bidora::binding::init(env, exports); }

NODE_API_MODULE(bidora, InitBidora)
