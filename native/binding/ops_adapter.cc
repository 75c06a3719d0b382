// Node-API glue for the fused DoRA and LoRA kernels: argument and shape checks, output allocation, dropout masks.
// The forward, backward and norm ops run on their tensors' device; merge, unmerge and the references on the CPU.
#include <algorithm>
#include <string>

#include "../cpu/dora.h"
#include "../cpu/random.h"
#include "args.h"
#include "gpu.h"
#include "op.h"
#include "ops.h"
#include "tensor_handle.h"

namespace bidora::binding {

namespace {

constexpr int64_t kMaxSafeInteger = 9007199254740991;

// The checked operands of one adapted linear layer.
struct Adapter {
  TensorHandle* input = nullptr;
  TensorHandle* weight = nullptr;
  TensorHandle* bias = nullptr;
  TensorHandle* lora_a = nullptr;
  TensorHandle* lora_b = nullptr;
  TensorHandle* magnitude = nullptr;
  cpu::AdapterDims dims{};
  Shape output_shape;
  Device device = Device::kCpu;
};

std::string both(const char* first, const Shape& a, const char* second, const Shape& b) {
  return describe(first, a) + " and " + describe(second, b);
}

// Checks weight [M,K], loraA [R,K] with R >= 1, loraB [M,R], magnitude [M], bias [M] and input [..., K] (rank 2
// or 3), whichever are given, and derives N, K, M, R.
Adapter check_adapter(const char* fn, TensorHandle* input, TensorHandle& weight, TensorHandle* bias,
                      TensorHandle& lora_a, TensorHandle& lora_b, TensorHandle* magnitude) {
  Adapter adapter{input, &weight, bias, &lora_a, &lora_b, magnitude, {}, {}};
  const Shape& w = weight.shape();
  const Shape& a = lora_a.shape();
  const Shape& b = lora_b.shape();
  const std::string where = std::string(fn) + ": ";
  if (w.rank != 2) throw RangeError(where + "expected weight of rank 2 (out, in), but " + describe("weight", w));
  const int64_t m = w[0], k = w[1];
  if (a.rank != 2 || a[1] != k) {
    throw RangeError(where + "expected loraA of shape [r, " + std::to_string(k) + "], but " +
                     both("loraA", a, "weight", w));
  }
  const int64_t r = a[0];
  if (r < 1) throw RangeError(where + "the rank r must be at least 1, but " + describe("loraA", a));
  if (b.rank != 2 || b[0] != m || b[1] != r) {
    throw RangeError(where + "expected loraB of shape [" + std::to_string(m) + ", " + std::to_string(r) + "], but " +
                     both("loraB", b, "loraA", a) + " and " + describe("weight", w));
  }
  if (magnitude != nullptr && (magnitude->shape().rank != 1 || magnitude->shape()[0] != m)) {
    throw RangeError(where + "expected magnitude of shape [" + std::to_string(m) + "], but " +
                     both("magnitude", magnitude->shape(), "weight", w));
  }
  if (bias != nullptr && (bias->shape().rank != 1 || bias->shape()[0] != m)) {
    throw RangeError(where + "expected bias of shape [" + std::to_string(m) + "], but " +
                     both("bias", bias->shape(), "weight", w));
  }
  int64_t n = 0;
  if (input != nullptr) {
    const Shape& x = input->shape();
    if ((x.rank != 2 && x.rank != 3) || x.last() != k) {
      throw RangeError(where + "expected input of shape [N, " + std::to_string(k) + "] or [batch, seq, " +
                       std::to_string(k) + "], but " + both("input", x, "weight", w));
    }
    n = x.rows();
    adapter.output_shape = x;
    adapter.output_shape.dims[x.rank - 1] = m;
  }
  adapter.dims = {n, k, m, r};
  adapter.device = same_device(fn, {{"input", input},
                                    {"weight", &weight},
                                    {"bias", bias},
                                    {"loraA", &lora_a},
                                    {"loraB", &lora_b},
                                    {"magnitude", magnitude}});
  return adapter;
}

void check_shape(const char* fn, const char* name, TensorHandle& tensor, const Shape& expected) {
  if (tensor.shape().numel() != expected.numel() || tensor.shape().last() != expected.last()) {
    throw RangeError(std::string(fn) + ": expected " + name + " of shape " + expected.str() + ", but " +
                     describe(name, tensor.shape()));
  }
}

Shape matrix(int64_t rows, int64_t cols) {
  Shape shape;
  shape.rank = 2;
  shape.dims[0] = rows;
  shape.dims[1] = cols;
  return shape;
}

Shape vector(int64_t length) {
  Shape shape;
  shape.rank = 1;
  shape.dims[0] = length;
  return shape;
}

struct Dropout {
  float p = 0;
  uint64_t seed = 0;
};

Dropout dropout_args(const Napi::CallbackInfo& info, size_t index, const char* fn) {
  Dropout dropout;
  const double p = number_arg({info, index, fn, "dropout"});
  if (p < 0 || p >= 1) throw RangeError(std::string(fn) + ": dropout must be in [0, 1), got " + std::to_string(p));
  dropout.p = static_cast<float>(p);
  dropout.seed = static_cast<uint64_t>(integer_arg({info, index + 1, fn, "seed"}, 0, kMaxSafeInteger));
  return dropout;
}

// The low-rank branch's input: x itself, or x after dropout in `storage`.
const float* lora_input(TensorHandle& input, const Dropout& dropout, FloatBuffer& storage) {
  if (dropout.p == 0) return input.data();
  storage = FloatBuffer(input.numel());
  cpu::dropout(storage.data(), input.data(), input.numel(), dropout.p, dropout.seed);
  return storage.data();
}

void apply_dropout_mask(float* values, int64_t count, const void* context) {
  const auto* dropout = static_cast<const Dropout*>(context);
  cpu::dropout(values, values, count, dropout->p, dropout->seed);
}

float scale_arg(const Napi::CallbackInfo& info, size_t index, const char* fn) {
  return static_cast<float>(number_arg({info, index, fn, "scale"}));
}

float eps_arg(const Napi::CallbackInfo& info, size_t index, const char* fn) {
  const double eps = number_arg({info, index, fn, "eps"});
  if (eps <= 0) throw RangeError(std::string(fn) + ": eps must be positive, got " + std::to_string(eps));
  return static_cast<float>(eps);
}

// Which gradients to compute: { input, loraA, loraB, magnitude, bias } booleans, all true when absent.
struct Needs {
  bool input = true, lora_a = true, lora_b = true, magnitude = true, bias = true;
};

Needs needs_arg(const Napi::CallbackInfo& info, size_t index, const char* fn) {
  Needs needs;
  if (info[index].IsUndefined()) return needs;
  if (!info[index].IsObject()) throw bidora::TypeError(std::string(fn) + ": needs must be an object of booleans");
  Napi::Object object = info[index].As<Napi::Object>();
  auto flag = [&](const char* key, bool& slot) {
    Napi::Value value = object.Get(key);
    if (value.IsUndefined()) return;
    if (!value.IsBoolean()) throw bidora::TypeError(std::string(fn) + ": needs." + key + " must be a boolean");
    slot = value.As<Napi::Boolean>().Value();
  };
  flag("input", needs.input);
  flag("loraA", needs.lora_a);
  flag("loraB", needs.lora_b);
  flag("magnitude", needs.magnitude);
  flag("bias", needs.bias);
  return needs;
}

// Allocates the requested gradients and returns them in a JavaScript object alongside the kernel's pointers.
struct GradOutputs {
  Napi::Object object;
  cpu::AdapterGrads pointers;
};

GradOutputs allocate_grads(Napi::Env env, const Adapter& adapter, const Needs& needs, bool dora) {
  GradOutputs grads{Napi::Object::New(env), {}};
  const auto [n, k, m, r] = adapter.dims;
  auto add = [&](const char* key, bool wanted, const Shape& shape, float** slot) {
    if (!wanted) return;
    TensorHandle* handle = nullptr;
    grads.object.Set(key, TensorHandle::allocate(env, shape, &handle, adapter.device));
    *slot = handle->data();
  };
  add("input", needs.input, adapter.input->shape(), &grads.pointers.input);
  add("loraA", needs.lora_a, matrix(r, k), &grads.pointers.lora_a);
  add("loraB", needs.lora_b, matrix(m, r), &grads.pointers.lora_b);
  add("magnitude", dora && needs.magnitude, vector(m), &grads.pointers.magnitude);
  add("bias", needs.bias && adapter.bias != nullptr, vector(m), &grads.pointers.bias);
  return grads;
}

Napi::Object new_tensor(Napi::Env env, const Shape& shape, float** data, Device device = Device::kCpu) {
  TensorHandle* handle = nullptr;
  Napi::Object object = TensorHandle::allocate(env, shape, &handle, device);
  *data = handle->data();
  return object;
}

#if BIDORA_HAVE_CUDA
cuda::GemmPrecision gpu_gemm_precision() { return gemm_precision(); }

// Dropout on the GPU with the CPU's mask: the same (seed, index) gives the same kept elements on either device. The
// scale (keep / (1 − p)) and the dropped input x ⊙ scale live in scratch until the next adapter call.
struct GpuDropout {
  const float* scale = nullptr;  // null without dropout
  const float* input = nullptr;  // x itself without dropout
};

GpuDropout gpu_dropout(TensorHandle& input, const Dropout& dropout, const char* fn) {
  if (dropout.p == 0) return {nullptr, input.data()};
  const int64_t count = input.numel();
  auto* scale = static_cast<float*>(cuda::scratch(2, static_cast<size_t>(count) * sizeof(float), fn));
  cuda::dropout(scale, nullptr, count, dropout.p, dropout.seed, nullptr);
  auto* dropped = static_cast<float*>(cuda::scratch(3, static_cast<size_t>(count) * sizeof(float), fn));
  // Dropped from x directly, not x ⊙ scale: a dropped inf or NaN is 0, as on the CPU.
  cuda::dropout(dropped, input.data(), count, dropout.p, dropout.seed, nullptr);
  return {scale, dropped};
}

cuda::AdapterDims gpu_dims(const cpu::AdapterDims& dims) { return {dims.n, dims.k, dims.m, dims.r}; }

cuda::AdapterGrads gpu_grads(const cpu::AdapterGrads& grads) {
  cuda::AdapterGrads result;
  result.input = grads.input;
  result.lora_a = grads.lora_a;
  result.lora_b = grads.lora_b;
  result.magnitude = grads.magnitude;
  result.bias = grads.bias;
  return result;
}

void* adapter_workspace(const cpu::AdapterDims& dims, const char* fn) {
  return cuda::scratch(1, cuda::adapter_workspace_bytes(gpu_dims(dims)), fn);
}
#endif

// [sync] doraForward(input, weight, bias?, loraA, loraB, magnitude, scale, eps, dropout, seed)
//   -> { output, combined, hidden, norm, weightLoraA, loraGram }
// combined (u = x W0ᵀ + s h Bᵀ, [N,M]), hidden (h, [N,R]), norm ([M]), weightLoraA (W0 Aᵀ, [M,R]) and loraGram
// (A Aᵀ, [R,R]) are what backward needs. Throws TypeError (not a live tensor), RangeError (shapes, r = 0, scale not
// finite, dropout outside [0, 1)).
Napi::Value dora_forward(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "doraForward";
    Adapter adapter =
        check_adapter(fn, &any_tensor_arg({info, 0, fn, "input"}), any_tensor_arg({info, 1, fn, "weight"}),
                      optional_any_tensor_arg({info, 2, fn, "bias"}), any_tensor_arg({info, 3, fn, "loraA"}),
                      any_tensor_arg({info, 4, fn, "loraB"}), &any_tensor_arg({info, 5, fn, "magnitude"}));
    const Device device = adapter.device;
    const float scale = scale_arg(info, 6, fn);
    const float eps = eps_arg(info, 7, fn);
    const Dropout dropout = dropout_args(info, 8, fn);
    const auto [n, k, m, r] = adapter.dims;
    Napi::Env env = info.Env();
    float *output, *combined, *hidden, *norm, *weight_lora_a, *lora_gram;
    Napi::Object result = Napi::Object::New(env);
    result.Set("output", new_tensor(env, adapter.output_shape, &output, device));
    result.Set("combined", new_tensor(env, matrix(n, m), &combined, device));
    result.Set("hidden", new_tensor(env, matrix(n, r), &hidden, device));
    result.Set("norm", new_tensor(env, vector(m), &norm, device));
    result.Set("weightLoraA", new_tensor(env, matrix(m, r), &weight_lora_a, device));
    result.Set("loraGram", new_tensor(env, matrix(r, r), &lora_gram, device));
#if BIDORA_HAVE_CUDA
    if (device == Device::kCuda) {
      const GpuDropout branch = gpu_dropout(*adapter.input, dropout, fn);
      cuda::dora_forward(output, combined, hidden, norm, weight_lora_a, lora_gram, adapter.input->data(), branch.input,
                         adapter.weight->data(), adapter.weight->row_sq_norms(),
                         adapter.bias != nullptr ? adapter.bias->data() : nullptr, adapter.lora_a->data(),
                         adapter.lora_b->data(), adapter.magnitude->data(), scale, eps, gpu_dims(adapter.dims),
                         gpu_gemm_precision(), adapter_workspace(adapter.dims, fn), nullptr);
      cuda::check_launch(fn);
      return result;
    }
#endif
    FloatBuffer dropped;
    const float* branch_input = lora_input(*adapter.input, dropout, dropped);
    // One pass over W0 gives both the base product and W0 Aᵀ for the norm.
    cpu::dora_forward(output, combined, hidden, norm, weight_lora_a, lora_gram, adapter.input->data(), branch_input,
                      adapter.weight->data(), adapter.weight->row_sq_norms(),
                      adapter.bias != nullptr ? adapter.bias->data() : nullptr, adapter.lora_a->data(),
                      adapter.lora_b->data(), adapter.magnitude->data(), scale, eps, adapter.dims);
    return result;
  });
}

// [sync] doraBackward(gradOutput, input, weight, bias?, loraA, loraB, magnitude, combined, hidden, norm, weightLoraA,
//   loraGram, scale, eps, detachNorm, dropout, seed, needs?) -> { input?, loraA?, loraB?, magnitude?, bias? }
// `combined` is consumed (overwritten). bias only tells whether a bias gradient exists. Throws TypeError, RangeError.
Napi::Value dora_backward(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "doraBackward";
    TensorHandle& grad_output = any_tensor_arg({info, 0, fn, "gradOutput"});
    Adapter adapter =
        check_adapter(fn, &any_tensor_arg({info, 1, fn, "input"}), any_tensor_arg({info, 2, fn, "weight"}),
                      optional_any_tensor_arg({info, 3, fn, "bias"}), any_tensor_arg({info, 4, fn, "loraA"}),
                      any_tensor_arg({info, 5, fn, "loraB"}), &any_tensor_arg({info, 6, fn, "magnitude"}));
    const auto [n, k, m, r] = adapter.dims;
    TensorHandle& combined = any_tensor_arg({info, 7, fn, "combined"});
    TensorHandle& hidden = any_tensor_arg({info, 8, fn, "hidden"});
    TensorHandle& norm = any_tensor_arg({info, 9, fn, "norm"});
    TensorHandle& weight_lora_a = any_tensor_arg({info, 10, fn, "weightLoraA"});
    TensorHandle& lora_gram = any_tensor_arg({info, 11, fn, "loraGram"});
    same_device(fn, {{"weight", adapter.weight},
                     {"gradOutput", &grad_output},
                     {"combined", &combined},
                     {"hidden", &hidden},
                     {"norm", &norm},
                     {"weightLoraA", &weight_lora_a},
                     {"loraGram", &lora_gram}});
    if (grad_output.shape() != adapter.output_shape) {
      throw RangeError(std::string(fn) + ": gradOutput must have the output's shape " + adapter.output_shape.str() +
                       ", but " + describe("gradOutput", grad_output.shape()));
    }
    check_shape(fn, "combined", combined, matrix(n, m));
    check_shape(fn, "hidden", hidden, matrix(n, r));
    check_shape(fn, "norm", norm, vector(m));
    check_shape(fn, "weightLoraA", weight_lora_a, matrix(m, r));
    check_shape(fn, "loraGram", lora_gram, matrix(r, r));
    const float scale = scale_arg(info, 12, fn);
    const float eps = eps_arg(info, 13, fn);
    const bool detach_norm = boolean_arg({info, 14, fn, "detachNorm"}, true);
    const Dropout dropout = dropout_args(info, 15, fn);
    const Needs needs = needs_arg(info, 17, fn);
    GradOutputs grads = allocate_grads(info.Env(), adapter, needs, true);
#if BIDORA_HAVE_CUDA
    if (adapter.device == Device::kCuda) {
      const GpuDropout branch = gpu_dropout(*adapter.input, dropout, fn);
      cuda::dora_backward(gpu_grads(grads.pointers), combined.data(), grad_output.data(), branch.input, branch.scale,
                          adapter.weight->data(), adapter.lora_a->data(), adapter.lora_b->data(),
                          adapter.magnitude->data(), norm.data(), hidden.data(), weight_lora_a.data(), lora_gram.data(),
                          scale, eps, detach_norm, gpu_dims(adapter.dims), gpu_gemm_precision(),
                          adapter_workspace(adapter.dims, fn), nullptr);
      cuda::check_launch(fn);
      combined.mark_modified();
      return grads.object;
    }
#endif
    FloatBuffer dropped;
    const float* branch_input = needs.lora_a ? lora_input(*adapter.input, dropout, dropped) : adapter.input->data();
    cpu::dora_backward(grads.pointers, combined.data(), grad_output.data(), branch_input, adapter.weight->data(),
                       adapter.lora_a->data(), adapter.lora_b->data(), adapter.magnitude->data(), norm.data(),
                       hidden.data(), weight_lora_a.data(), lora_gram.data(), scale, eps, detach_norm,
                       dropout.p > 0 ? apply_dropout_mask : nullptr, &dropout, adapter.dims);
    combined.mark_modified();
    return grads.object;
  });
}

// [sync] loraForward(input, weight, bias?, loraA, loraB, scale, dropout, seed) -> { output, hidden }
Napi::Value lora_forward(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "loraForward";
    Adapter adapter =
        check_adapter(fn, &any_tensor_arg({info, 0, fn, "input"}), any_tensor_arg({info, 1, fn, "weight"}),
                      optional_any_tensor_arg({info, 2, fn, "bias"}), any_tensor_arg({info, 3, fn, "loraA"}),
                      any_tensor_arg({info, 4, fn, "loraB"}), nullptr);
    const float scale = scale_arg(info, 5, fn);
    const Dropout dropout = dropout_args(info, 6, fn);
    const auto [n, k, m, r] = adapter.dims;
    Napi::Env env = info.Env();
    float *output, *hidden;
    Napi::Object result = Napi::Object::New(env);
    result.Set("output", new_tensor(env, adapter.output_shape, &output, adapter.device));
    result.Set("hidden", new_tensor(env, matrix(n, r), &hidden, adapter.device));
#if BIDORA_HAVE_CUDA
    if (adapter.device == Device::kCuda) {
      const GpuDropout branch = gpu_dropout(*adapter.input, dropout, fn);
      cuda::lora_forward(output, hidden, adapter.input->data(), branch.input, adapter.weight->data(),
                         adapter.bias != nullptr ? adapter.bias->data() : nullptr, adapter.lora_a->data(),
                         adapter.lora_b->data(), scale, gpu_dims(adapter.dims), gpu_gemm_precision(),
                         adapter_workspace(adapter.dims, fn), nullptr);
      cuda::check_launch(fn);
      return result;
    }
#endif
    FloatBuffer dropped;
    const float* branch_input = lora_input(*adapter.input, dropout, dropped);
    cpu::lora_forward(output, hidden, adapter.input->data(), branch_input, adapter.weight->data(),
                      adapter.bias != nullptr ? adapter.bias->data() : nullptr, adapter.lora_a->data(),
                      adapter.lora_b->data(), scale, adapter.dims);
    return result;
  });
}

// [sync] loraBackward(gradOutput, input, weight, bias?, loraA, loraB, hidden, scale, dropout, seed, needs?)
//   -> { input?, loraA?, loraB?, bias? }
Napi::Value lora_backward(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "loraBackward";
    TensorHandle& grad_output = any_tensor_arg({info, 0, fn, "gradOutput"});
    Adapter adapter =
        check_adapter(fn, &any_tensor_arg({info, 1, fn, "input"}), any_tensor_arg({info, 2, fn, "weight"}),
                      optional_any_tensor_arg({info, 3, fn, "bias"}), any_tensor_arg({info, 4, fn, "loraA"}),
                      any_tensor_arg({info, 5, fn, "loraB"}), nullptr);
    const auto [n, k, m, r] = adapter.dims;
    TensorHandle& hidden = any_tensor_arg({info, 6, fn, "hidden"});
    same_device(fn, {{"weight", adapter.weight}, {"gradOutput", &grad_output}, {"hidden", &hidden}});
    if (grad_output.shape() != adapter.output_shape) {
      throw RangeError(std::string(fn) + ": gradOutput must have the output's shape " + adapter.output_shape.str() +
                       ", but " + describe("gradOutput", grad_output.shape()));
    }
    check_shape(fn, "hidden", hidden, matrix(n, r));
    const float scale = scale_arg(info, 7, fn);
    const Dropout dropout = dropout_args(info, 8, fn);
    const Needs needs = needs_arg(info, 10, fn);
    GradOutputs grads = allocate_grads(info.Env(), adapter, needs, false);
#if BIDORA_HAVE_CUDA
    if (adapter.device == Device::kCuda) {
      const GpuDropout branch = gpu_dropout(*adapter.input, dropout, fn);
      cuda::lora_backward(gpu_grads(grads.pointers), grad_output.data(), branch.input, branch.scale,
                          adapter.weight->data(), adapter.lora_a->data(), adapter.lora_b->data(), hidden.data(), scale,
                          gpu_dims(adapter.dims), gpu_gemm_precision(), adapter_workspace(adapter.dims, fn), nullptr);
      cuda::check_launch(fn);
      return grads.object;
    }
#endif
    FloatBuffer dropped;
    const float* branch_input = needs.lora_a ? lora_input(*adapter.input, dropout, dropped) : adapter.input->data();
    cpu::lora_backward(grads.pointers, grad_output.data(), branch_input, adapter.weight->data(), adapter.lora_a->data(),
                       adapter.lora_b->data(), hidden.data(), scale, dropout.p > 0 ? apply_dropout_mask : nullptr,
                       &dropout, adapter.dims);
    return grads.object;
  });
}

// [sync] doraWeightNorm(weight, loraA, loraB, scale, eps) -> norm [M] = max(||W0 + s B A||_row, eps)
Napi::Value dora_weight_norm(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "doraWeightNorm";
    Adapter adapter =
        check_adapter(fn, nullptr, any_tensor_arg({info, 0, fn, "weight"}), nullptr,
                      any_tensor_arg({info, 1, fn, "loraA"}), any_tensor_arg({info, 2, fn, "loraB"}), nullptr);
    const float scale = scale_arg(info, 3, fn);
    const float eps = eps_arg(info, 4, fn);
    const auto [n, k, m, r] = adapter.dims;
    float* norm;
    Napi::Object result = new_tensor(info.Env(), vector(m), &norm, adapter.device);
#if BIDORA_HAVE_CUDA
    if (adapter.device == Device::kCuda) {
      auto* factors = static_cast<float*>(cuda::scratch(2, static_cast<size_t>(m * r + r * r) * sizeof(float), fn));
      cuda::dora_norm(norm, factors, factors + m * r, adapter.weight->data(), adapter.weight->row_sq_norms(),
                      adapter.lora_a->data(), adapter.lora_b->data(), scale, eps, gpu_dims(adapter.dims),
                      adapter_workspace(adapter.dims, fn), nullptr);
      cuda::check_launch(fn);
      return result;
    }
#endif
    FloatBuffer weight_lora_a(m * r), lora_gram(r * r);
    cpu::dora_norm(norm, weight_lora_a.data(), lora_gram.data(), adapter.weight->data(), adapter.weight->row_sq_norms(),
                   adapter.lora_a->data(), adapter.lora_b->data(), scale, eps, m, k, r);
    return result;
  });
}

// [sync] adapterMerge(weight, loraA, loraB, magnitude?, scale, eps) -> merged [M,K]: (m / n) ⊙ (W0 + s B A) with a
// magnitude (DoRA), W0 + s B A without (LoRA).
Napi::Value adapter_merge(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "adapterMerge";
    TensorHandle* magnitude = optional_tensor_arg({info, 3, fn, "magnitude"});
    Adapter adapter = check_adapter(fn, nullptr, tensor_arg({info, 0, fn, "weight"}), nullptr,
                                    tensor_arg({info, 1, fn, "loraA"}), tensor_arg({info, 2, fn, "loraB"}), magnitude);
    const float scale = scale_arg(info, 4, fn);
    const float eps = eps_arg(info, 5, fn);
    const auto [n, k, m, r] = adapter.dims;
    float* merged;
    Napi::Object result = new_tensor(info.Env(), matrix(m, k), &merged);
    FloatBuffer norm;
    if (magnitude != nullptr) {
      norm = FloatBuffer(m);
      FloatBuffer weight_lora_a(m * r), lora_gram(r * r);
      cpu::dora_norm(norm.data(), weight_lora_a.data(), lora_gram.data(), adapter.weight->data(),
                     adapter.weight->row_sq_norms(), adapter.lora_a->data(), adapter.lora_b->data(), scale, eps, m, k,
                     r);
    }
    cpu::adapter_merge(merged, adapter.weight->data(), adapter.lora_a->data(), adapter.lora_b->data(),
                       magnitude != nullptr ? magnitude->data() : nullptr, norm.data(), scale, m, k, r);
    return result;
  });
}

// [sync] adapterUnmerge(merged, loraA, loraB, magnitude?, norm?, scale) -> weight [M,K]. DoRA needs the norm from
// before merging (doraWeightNorm) and non-zero magnitudes. Throws RangeError for a zero magnitude.
Napi::Value adapter_unmerge(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "adapterUnmerge";
    TensorHandle* magnitude = optional_tensor_arg({info, 3, fn, "magnitude"});
    TensorHandle* norm = optional_tensor_arg({info, 4, fn, "norm"});
    Adapter adapter = check_adapter(fn, nullptr, tensor_arg({info, 0, fn, "merged"}), nullptr,
                                    tensor_arg({info, 1, fn, "loraA"}), tensor_arg({info, 2, fn, "loraB"}), magnitude);
    const auto [n, k, m, r] = adapter.dims;
    if ((magnitude == nullptr) != (norm == nullptr)) {
      throw bidora::TypeError(std::string(fn) + ": magnitude and norm go together (DoRA) or are both absent (LoRA)");
    }
    if (norm != nullptr) check_shape(fn, "norm", *norm, vector(m));
    if (magnitude != nullptr) {
      for (int64_t j = 0; j < m; ++j) {
        if (magnitude->data()[j] == 0.0f) {
          throw RangeError(std::string(fn) + ": magnitude[" + std::to_string(j) +
                           "] is 0, so that row of the merged weight no longer holds its direction");
        }
      }
    }
    const float scale = scale_arg(info, 5, fn);
    float* weight;
    Napi::Object result = new_tensor(info.Env(), matrix(m, k), &weight);
    cpu::adapter_unmerge(weight, adapter.weight->data(), adapter.lora_a->data(), adapter.lora_b->data(),
                         magnitude != nullptr ? magnitude->data() : nullptr, norm != nullptr ? norm->data() : nullptr,
                         scale, m, k, r);
    return result;
  });
}

// [sync] adapterForwardReference(input, weight, bias?, loraA, loraB, magnitude?, scale, eps, dropout, seed) -> output
// The plain double-precision reference (forms V); magnitude absent = LoRA.
Napi::Value adapter_forward_reference(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "adapterForwardReference";
    Adapter adapter =
        check_adapter(fn, &tensor_arg({info, 0, fn, "input"}), tensor_arg({info, 1, fn, "weight"}),
                      optional_tensor_arg({info, 2, fn, "bias"}), tensor_arg({info, 3, fn, "loraA"}),
                      tensor_arg({info, 4, fn, "loraB"}), optional_tensor_arg({info, 5, fn, "magnitude"}));
    const float scale = scale_arg(info, 6, fn);
    const float eps = eps_arg(info, 7, fn);
    const Dropout dropout = dropout_args(info, 8, fn);
    float* output;
    Napi::Object result = new_tensor(info.Env(), adapter.output_shape, &output);
    FloatBuffer dropped;
    const float* branch_input = lora_input(*adapter.input, dropout, dropped);
    cpu::adapter_forward_reference(output, adapter.input->data(), branch_input, adapter.weight->data(),
                                   adapter.bias != nullptr ? adapter.bias->data() : nullptr, adapter.lora_a->data(),
                                   adapter.lora_b->data(), adapter.magnitude ? adapter.magnitude->data() : nullptr,
                                   scale, eps, adapter.dims);
    return result;
  });
}

// [sync] adapterBackwardReference(gradOutput, input, weight, bias?, loraA, loraB, magnitude?, scale, eps, detachNorm,
//   dropout, seed) -> { input, loraA, loraB, magnitude?, bias? }
Napi::Value adapter_backward_reference(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "adapterBackwardReference";
    TensorHandle& grad_output = tensor_arg({info, 0, fn, "gradOutput"});
    Adapter adapter =
        check_adapter(fn, &tensor_arg({info, 1, fn, "input"}), tensor_arg({info, 2, fn, "weight"}),
                      optional_tensor_arg({info, 3, fn, "bias"}), tensor_arg({info, 4, fn, "loraA"}),
                      tensor_arg({info, 5, fn, "loraB"}), optional_tensor_arg({info, 6, fn, "magnitude"}));
    if (grad_output.shape() != adapter.output_shape) {
      throw RangeError(std::string(fn) + ": gradOutput must have the output's shape " + adapter.output_shape.str());
    }
    const float scale = scale_arg(info, 7, fn);
    const float eps = eps_arg(info, 8, fn);
    const bool detach_norm = boolean_arg({info, 9, fn, "detachNorm"}, true);
    const Dropout dropout = dropout_args(info, 10, fn);
    GradOutputs grads = allocate_grads(info.Env(), adapter, Needs{}, adapter.magnitude != nullptr);
    FloatBuffer dropped, mask;
    const float* branch_input = lora_input(*adapter.input, dropout, dropped);
    if (dropout.p > 0) {
      mask = FloatBuffer(adapter.input->numel());
      std::fill_n(mask.data(), mask.size(), 1.0f);
      cpu::dropout(mask.data(), mask.data(), mask.size(), dropout.p, dropout.seed);
    }
    cpu::adapter_backward_reference(
        grads.pointers, grad_output.data(), adapter.input->data(), branch_input, dropout.p > 0 ? mask.data() : nullptr,
        adapter.weight->data(), adapter.lora_a->data(), adapter.lora_b->data(),
        adapter.magnitude ? adapter.magnitude->data() : nullptr, scale, eps, detach_norm, adapter.dims);
    return grads.object;
  });
}

}  // namespace

void register_adapter(Napi::Env env, Napi::Object exports) {
  exports.Set("doraForward", Napi::Function::New<dora_forward>(env, "doraForward"));
  exports.Set("doraBackward", Napi::Function::New<dora_backward>(env, "doraBackward"));
  exports.Set("loraForward", Napi::Function::New<lora_forward>(env, "loraForward"));
  exports.Set("loraBackward", Napi::Function::New<lora_backward>(env, "loraBackward"));
  exports.Set("doraWeightNorm", Napi::Function::New<dora_weight_norm>(env, "doraWeightNorm"));
  exports.Set("adapterMerge", Napi::Function::New<adapter_merge>(env, "adapterMerge"));
  exports.Set("adapterUnmerge", Napi::Function::New<adapter_unmerge>(env, "adapterUnmerge"));
  exports.Set("adapterForwardReference",
              Napi::Function::New<adapter_forward_reference>(env, "adapterForwardReference"));
  exports.Set("adapterBackwardReference",
              Napi::Function::New<adapter_backward_reference>(env, "adapterBackwardReference"));
}

}  // namespace bidora::binding
