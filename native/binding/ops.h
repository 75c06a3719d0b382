// Registration of each family of native entry points on the addon's exports.
#pragma once

#include <napi.h>

namespace bidora::binding {

void register_creation(Napi::Env env, Napi::Object exports);
void register_linear_algebra(Napi::Env env, Napi::Object exports);
void register_elementwise(Napi::Env env, Napi::Object exports);
void register_adapter(Napi::Env env, Napi::Object exports);
void register_nn(Napi::Env env, Napi::Object exports);
void register_optim(Napi::Env env, Napi::Object exports);

}  // namespace bidora::binding
