// Registration of each family of native entry points on the addon's exports.
#pragma once

#include <napi.h>

#include "gpu.h"

namespace bidora::binding {

#if BIDORA_HAVE_CUDA
// The rounding of GPU products chosen with setMatmulPrecision (ops_linear_algebra.cc).
cuda::GemmPrecision gpu_gemm_precision();
#endif

void register_creation(Napi::Env env, Napi::Object exports);
void register_linear_algebra(Napi::Env env, Napi::Object exports);
void register_elementwise(Napi::Env env, Napi::Object exports);
void register_adapter(Napi::Env env, Napi::Object exports);
void register_nn(Napi::Env env, Napi::Object exports);
void register_optim(Napi::Env env, Napi::Object exports);

}  // namespace bidora::binding
