// Node-API glue for the optimizer kernels over tensor lists and the orthogonality regulariser: argument checks,
// in-place writes (with mark_modified), no arithmetic. The optimizer and list ops run on their tensors' device (every
// tensor of a call on one device); orthogonalityPenalty on the CPU only (lib/ops/regularizer.ts serves GPU layers).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../cpu/optim.h"
#include "../cpu/regularizer.h"
#include "args.h"
#include "gpu.h"
#include "ops.h"
#include "tensor_handle.h"

namespace bidora::binding {

namespace {

constexpr int64_t kMaxSafeInteger = 9007199254740991;

// The tensors of one array argument, each checked live (and on the CPU unless any_device); messages name them like
// "adamwStep: grads[2]".
struct TensorList {
  std::string name;
  std::vector<TensorHandle*> handles;
};

TensorList tensor_list(const Napi::CallbackInfo& info, size_t index, const char* fn, const char* name,
                       bool any_device = false) {
  TensorList list{name, {}};
  if (!info[index].IsArray()) throw bidora::TypeError(std::string(fn) + ": " + name + " must be an array of Tensors");
  Napi::Array array = info[index].As<Napi::Array>();
  for (uint32_t position = 0; position < array.Length(); ++position) {
    const std::string where = std::string(fn) + ": " + name + "[" + std::to_string(position) + "]";
    list.handles.push_back(&tensor_value(info.Env(), array.Get(position), where, any_device));
  }
  return list;
}

std::string element(const TensorList& list, size_t position) {
  return list.name + "[" + std::to_string(position) + "]";
}

// The device every tensor of the lists is on (the CPU when they are all empty); TypeError naming the first tensor
// and one on another device, worded as same_device.
Device list_device(const char* fn, const std::vector<const TensorList*>& lists) {
  const TensorList* first = nullptr;
  for (const TensorList* list : lists) {
    for (size_t position = 0; position < list->handles.size(); ++position) {
      if (first == nullptr) {
        first = list;
        continue;
      }
      const Device expected = first->handles[0]->device();
      const Device actual = list->handles[position]->device();
      if (actual != expected) {
        throw bidora::TypeError(std::string(fn) + ": " + element(*first, 0) + " is on '" + device_name(expected) +
                                "' but " + element(*list, position) + " is on '" + device_name(actual) +
                                "'; move one with .to() so both are on the same device");
      }
    }
  }
  return first == nullptr ? Device::kCpu : first->handles[0]->device();
}

// `other` must hold as many tensors as `first`, each of the same shape as its partner.
void check_pairs(const char* fn, const TensorList& first, const TensorList& other) {
  if (other.handles.size() != first.handles.size()) {
    throw RangeError(std::string(fn) + ": " + other.name + " has " + std::to_string(other.handles.size()) +
                     " tensors but " + first.name + " has " + std::to_string(first.handles.size()));
  }
  for (size_t position = 0; position < first.handles.size(); ++position) {
    const Shape& expected = first.handles[position]->shape();
    const Shape& actual = other.handles[position]->shape();
    if (actual != expected) {
      throw RangeError(std::string(fn) + ": " + element(other, position) + " must have the shape of " +
                       element(first, position) + ", but " + describe(element(first, position).c_str(), expected) +
                       " and " + describe(element(other, position).c_str(), actual));
    }
  }
}

// An in-place update of one storage through two handles (the same tensor twice, or a view of it) would update it
// twice, or read what it has just written: refuse any storage that a written list shares with another tensor.
void check_distinct_storage(const char* fn, const std::vector<const TensorList*>& written,
                            const std::vector<const TensorList*>& read) {
  struct Entry {
    const float* data;
    const TensorList* list;
    size_t position;
    bool writes;
  };
  std::vector<Entry> entries;
  auto add = [&](const TensorList* list, bool writes) {
    for (size_t position = 0; position < list->handles.size(); ++position) {
      TensorHandle* handle = list->handles[position];
      if (handle->numel() > 0) entries.push_back({handle->data(), list, position, writes});
    }
  };
  for (const TensorList* list : written) add(list, true);
  for (const TensorList* list : read) add(list, false);
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.data < b.data; });
  for (size_t index = 1; index < entries.size(); ++index) {
    const Entry& a = entries[index - 1];
    const Entry& b = entries[index];
    if (a.data == b.data && (a.writes || b.writes)) {
      throw RangeError(std::string(fn) + ": " + element(*a.list, a.position) + " and " + element(*b.list, b.position) +
                       " share storage, but an in-place update needs distinct tensors");
    }
  }
}

struct Pointers {
  std::vector<float*> data;
  std::vector<int64_t> lengths;
};

Pointers pointers(const TensorList& list) {
  Pointers result;
  for (TensorHandle* handle : list.handles) {
    result.data.push_back(handle->data());
    result.lengths.push_back(handle->numel());
  }
  return result;
}

std::vector<const float*> read_pointers(const TensorList& list) {
  std::vector<const float*> result;
  for (TensorHandle* handle : list.handles) result.push_back(handle->data());
  return result;
}

// Called before the kernel runs: one that fails halfway has still changed what a saved tensor's backward would read.
void mark_modified(const TensorList& list) {
  for (TensorHandle* handle : list.handles) handle->mark_modified();
}

// A finite number in [min, max] (or [min, max) when `max_open`), RangeError naming the bounds otherwise.
double bounded_number(const Arg& arg, double min, double max, bool max_open = false) {
  const double value = number_arg(arg);
  if (value < min || value > max || (max_open && value == max)) {
    throw RangeError(arg.where() + " must be in [" + std::to_string(min) + ", " + std::to_string(max) +
                     (max_open ? ")" : "]") + ", got " + std::to_string(value));
  }
  return value;
}

double non_negative(const Arg& arg) {
  const double value = number_arg(arg);
  if (value < 0) throw RangeError(arg.where() + " must be non-negative, got " + std::to_string(value));
  return value;
}

// [sync] adamwStep(params, grads, expAvg, expAvgSq, lr, beta1, beta2, eps, weightDecay, step): void
// One AdamW update (PyTorch's rule, see native/cpu/optim.h) of every params[i] in place, with its moments expAvg[i]
// and expAvgSq[i] (zeros before the first step). step: the update's number, 1 first. Runs on the tensors' device
// (the fused kernel of native/cuda/optim.cu for 'cuda'; same rule, rounded in float32 on the device). Throws
// TypeError (not an array of live tensors, tensors on different devices, not a number), RangeError (lists of
// different lengths, a shape that differs from its param's, shared storage, lr/eps/weightDecay negative, a beta
// outside [0, 1), step not an integer of at least 1).
Napi::Value adamw_step(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "adamwStep";
    const TensorList params = tensor_list(info, 0, fn, "params", true);
    const TensorList grads = tensor_list(info, 1, fn, "grads", true);
    const TensorList exp_avg = tensor_list(info, 2, fn, "expAvg", true);
    const TensorList exp_avg_sq = tensor_list(info, 3, fn, "expAvgSq", true);
    const Device device = list_device(fn, {&params, &grads, &exp_avg, &exp_avg_sq});
    cpu::AdamwOptions options{};
    options.lr = non_negative({info, 4, fn, "lr"});
    options.beta1 = bounded_number({info, 5, fn, "beta1"}, 0, 1, true);
    options.beta2 = bounded_number({info, 6, fn, "beta2"}, 0, 1, true);
    options.eps = non_negative({info, 7, fn, "eps"});
    options.weight_decay = non_negative({info, 8, fn, "weightDecay"});
    options.step = integer_arg({info, 9, fn, "step"}, 1, kMaxSafeInteger);
    check_pairs(fn, params, grads);
    check_pairs(fn, params, exp_avg);
    check_pairs(fn, params, exp_avg_sq);
    check_distinct_storage(fn, {&params, &exp_avg, &exp_avg_sq}, {&grads});
    mark_modified(params);
    mark_modified(exp_avg);
    mark_modified(exp_avg_sq);
    const Pointers p = pointers(params);
    if (device == Device::kCuda) {
#if BIDORA_HAVE_CUDA
      // The launcher takes the rule's inputs and forms the step's scalars on the device; only the bias corrections
      // depend on the step, so they are computed here in double like the CPU's and rounded once.
      const double step = static_cast<double>(options.step);
      cuda::AdamWStep scalars{};
      scalars.learning_rate = static_cast<float>(options.lr);
      scalars.beta1 = static_cast<float>(options.beta1);
      scalars.beta2 = static_cast<float>(options.beta2);
      scalars.eps = static_cast<float>(options.eps);
      scalars.weight_decay = static_cast<float>(options.weight_decay);
      scalars.bias_correction1 = static_cast<float>(1.0 - std::pow(options.beta1, step));
      scalars.bias_correction2 = static_cast<float>(1.0 - std::pow(options.beta2, step));
      cuda::adamw_step(p.data.data(), pointers(exp_avg).data.data(), pointers(exp_avg_sq).data.data(),
                       read_pointers(grads).data(), p.lengths.data(), static_cast<int>(p.lengths.size()), scalars,
                       nullptr);
      cuda::check_launch(fn);
#else
      throw RangeError(std::string(fn) + ": this build of bidora has no CUDA kernels");
#endif
    } else {
      cpu::adamw_step(p.data.data(), read_pointers(grads).data(), pointers(exp_avg).data.data(),
                      pointers(exp_avg_sq).data.data(), p.lengths.data(), static_cast<int64_t>(p.lengths.size()),
                      options);
    }
    return info.Env().Undefined();
  });
}

// [sync] sgdStep(params, grads, momentumBuffers | undefined, lr, momentum, weightDecay, nesterov): void
// One SGD update (PyTorch's rule with dampening 0) of every params[i] in place. momentumBuffers: zeros before the
// first step (which then sets them to the gradient, as PyTorch does); needed when momentum is non-zero. Runs on the
// tensors' device. Throws TypeError, RangeError (as adamwStep; momentum negative, nesterov without momentum, momentum
// without buffers).
Napi::Value sgd_step(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "sgdStep";
    const TensorList params = tensor_list(info, 0, fn, "params", true);
    const TensorList grads = tensor_list(info, 1, fn, "grads", true);
    const bool has_buffers = !Arg{info, 2, fn, "momentumBuffers"}.missing();
    const TensorList buffers = has_buffers ? tensor_list(info, 2, fn, "momentumBuffers", true) : TensorList{};
    const Device device = list_device(fn, {&params, &grads, &buffers});
    cpu::SgdOptions options{};
    options.lr = non_negative({info, 3, fn, "lr"});
    options.momentum = non_negative({info, 4, fn, "momentum"});
    options.weight_decay = non_negative({info, 5, fn, "weightDecay"});
    options.nesterov = boolean_arg({info, 6, fn, "nesterov"}, false);
    if (options.nesterov && options.momentum == 0) {
      throw RangeError(std::string(fn) + ": nesterov needs a non-zero momentum");
    }
    if (options.momentum != 0 && !has_buffers) {
      throw bidora::TypeError(std::string(fn) + ": momentumBuffers must be an array of Tensors when momentum is " +
                              std::to_string(options.momentum));
    }
    check_pairs(fn, params, grads);
    if (has_buffers) check_pairs(fn, params, buffers);
    check_distinct_storage(fn, {&params, &buffers}, {&grads});
    mark_modified(params);
    mark_modified(buffers);
    const Pointers p = pointers(params);
    const Pointers b = pointers(buffers);
    if (device == Device::kCuda) {
#if BIDORA_HAVE_CUDA
      const cuda::SgdStep step{static_cast<float>(options.lr), static_cast<float>(options.momentum),
                               static_cast<float>(options.weight_decay), options.nesterov};
      cuda::sgd_step(p.data.data(), has_buffers ? b.data.data() : nullptr, read_pointers(grads).data(),
                     p.lengths.data(), static_cast<int>(p.lengths.size()), step, nullptr);
      cuda::check_launch(fn);
#else
      throw RangeError(std::string(fn) + ": this build of bidora has no CUDA kernels");
#endif
    } else {
      cpu::sgd_step(p.data.data(), read_pointers(grads).data(), has_buffers ? b.data.data() : nullptr, p.lengths.data(),
                    static_cast<int64_t>(p.lengths.size()), options);
    }
    return info.Env().Undefined();
  });
}

// [sync] axpyList(ys, alpha, xs): void - ys[i] += alpha * xs[i] in place, for every pair. Runs on the tensors'
// device. Throws TypeError (as adamwStep), RangeError (lists of different lengths, shapes that differ pairwise, a y
// sharing storage with another tensor).
Napi::Value axpy_list(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "axpyList";
    const TensorList ys = tensor_list(info, 0, fn, "ys", true);
    const double alpha = number_arg({info, 1, fn, "alpha"});
    const TensorList xs = tensor_list(info, 2, fn, "xs", true);
    const Device device = list_device(fn, {&ys, &xs});
    check_pairs(fn, ys, xs);
    check_distinct_storage(fn, {&ys}, {&xs});
    mark_modified(ys);
    const Pointers y = pointers(ys);
    if (device == Device::kCuda) {
#if BIDORA_HAVE_CUDA
      cuda::list_axpy(y.data.data(), read_pointers(xs).data(), y.lengths.data(), static_cast<int>(y.lengths.size()),
                      static_cast<float>(alpha), nullptr, nullptr);
      cuda::check_launch(fn);
#else
      throw RangeError(std::string(fn) + ": this build of bidora has no CUDA kernels");
#endif
    } else {
      cpu::axpy_list(y.data.data(), static_cast<float>(alpha), read_pointers(xs).data(), y.lengths.data(),
                     static_cast<int64_t>(y.lengths.size()));
    }
    return info.Env().Undefined();
  });
}

// [sync] scaleList(tensors, factor): void - tensors[i] *= factor in place. Runs on the tensors' device (on 'cuda' one
// elementwise launch per tensor: there is no list launcher for it). Throws TypeError (as adamwStep), RangeError
// (factor not finite, one storage listed twice).
Napi::Value scale_list(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "scaleList";
    const TensorList tensors = tensor_list(info, 0, fn, "tensors", true);
    const Device device = list_device(fn, {&tensors});
    const double factor = number_arg({info, 1, fn, "factor"});
    check_distinct_storage(fn, {&tensors}, {});
    mark_modified(tensors);
    const Pointers t = pointers(tensors);
    if (device == Device::kCuda) {
#if BIDORA_HAVE_CUDA
      for (size_t index = 0; index < t.data.size(); ++index) {
        cuda::scale(t.data[index], t.data[index], static_cast<float>(factor), t.lengths[index], nullptr);
      }
      cuda::check_launch(fn);
#else
      throw RangeError(std::string(fn) + ": this build of bidora has no CUDA kernels");
#endif
    } else {
      cpu::scale_list(t.data.data(), static_cast<float>(factor), t.lengths.data(),
                      static_cast<int64_t>(t.lengths.size()));
    }
    return info.Env().Undefined();
  });
}

// [sync] combineHypergradient(direct, plus, minus, factor): void - direct[i] -= factor * (plus[i] - minus[i]) in
// place (BiDoRA: g − ξ (g⁺ − g⁻) / (2ε), factor = ξ / (2ε)). Runs on the tensors' device. Throws TypeError (as
// adamwStep), RangeError (as axpyList).
Napi::Value combine_hypergradient(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "combineHypergradient";
    const TensorList direct = tensor_list(info, 0, fn, "direct", true);
    const TensorList plus = tensor_list(info, 1, fn, "plus", true);
    const TensorList minus = tensor_list(info, 2, fn, "minus", true);
    const Device device = list_device(fn, {&direct, &plus, &minus});
    const double factor = number_arg({info, 3, fn, "factor"});
    check_pairs(fn, direct, plus);
    check_pairs(fn, direct, minus);
    check_distinct_storage(fn, {&direct}, {&plus, &minus});
    mark_modified(direct);
    const Pointers d = pointers(direct);
    if (device == Device::kCuda) {
#if BIDORA_HAVE_CUDA
      // The launcher forms the factor on the device as xi / (2ε) from a device ε; ε = 0.5 makes that exactly xi,
      // so the factor from JavaScript (any sign) goes in as xi unchanged. out aliases g: the update is in place.
      float* half = static_cast<float*>(cuda::scratch(0, sizeof(float), fn));
      const float one_half = 0.5f;
      cuda::copy_to_device(half, &one_half, 1, fn);
      const std::vector<const float*> grads(d.data.begin(), d.data.end());
      cuda::hypergradient_combine(d.data.data(), grads.data(), read_pointers(plus).data(), read_pointers(minus).data(),
                                  d.lengths.data(), static_cast<int>(d.lengths.size()), static_cast<float>(factor),
                                  half, nullptr);
      cuda::check_launch(fn);
#else
      throw RangeError(std::string(fn) + ": this build of bidora has no CUDA kernels");
#endif
    } else {
      cpu::combine_hypergradient(d.data.data(), read_pointers(plus).data(), read_pointers(minus).data(),
                                 static_cast<float>(factor), d.lengths.data(), static_cast<int64_t>(d.lengths.size()));
    }
    return info.Env().Undefined();
  });
}

Shape matrix(int64_t rows, int64_t cols) {
  Shape shape;
  shape.rank = 2;
  shape.dims[0] = rows;
  shape.dims[1] = cols;
  return shape;
}

// [sync] orthogonalityPenalty(weight, weightGram, loraA, loraB, scale, eps, computeGradients = true)
//   -> { value: number, gradA?: TensorHandle [R,K], gradB?: TensorHandle [M,R] }
// BiDoRA's F = ||D Dᵀ − I||_F for D the row-normalised W0 + s B A (norms floored at eps), and dF/dA, dF/dB (only
// when computeGradients), from weight W0 [M,K], weightGram = W0 W0ᵀ [M,M], loraA [R,K] (R ≥ 1), loraB [M,R]; never
// forms an [M,K] matrix. CPU only (no CUDA kernel): a 'cuda' tensor is a TypeError. Throws TypeError (not a live
// tensor, not a number), RangeError (shapes that do not fit, scale not finite, eps not positive).
Napi::Value orthogonality_penalty(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "orthogonalityPenalty";
    TensorHandle& weight = tensor_arg({info, 0, fn, "weight"});
    TensorHandle& weight_gram = tensor_arg({info, 1, fn, "weightGram"});
    TensorHandle& lora_a = tensor_arg({info, 2, fn, "loraA"});
    TensorHandle& lora_b = tensor_arg({info, 3, fn, "loraB"});
    const double scale = number_arg({info, 4, fn, "scale"});
    const double eps = number_arg({info, 5, fn, "eps"});
    if (eps <= 0) throw RangeError(std::string(fn) + ": eps must be positive, got " + std::to_string(eps));
    const bool compute_gradients = boolean_arg({info, 6, fn, "computeGradients"}, true);
    const std::string where = std::string(fn) + ": ";
    const Shape& w = weight.shape();
    if (w.rank != 2) throw RangeError(where + "expected weight of rank 2 (out, in), but " + describe("weight", w));
    const int64_t m = w[0], k = w[1];
    const Shape& a = lora_a.shape();
    if (a.rank != 2 || a[1] != k || a[0] < 1) {
      throw RangeError(where + "expected loraA of shape [r, " + std::to_string(k) + "] with r >= 1, but " +
                       describe("loraA", a) + " and " + describe("weight", w));
    }
    const int64_t r = a[0];
    if (lora_b.shape() != matrix(m, r)) {
      throw RangeError(where + "expected loraB of shape " + matrix(m, r).str() + ", but " +
                       describe("loraB", lora_b.shape()) + " and " + describe("loraA", a) + " and " +
                       describe("weight", w));
    }
    if (weight_gram.shape() != matrix(m, m)) {
      throw RangeError(where + "expected weightGram (W0 W0ᵀ) of shape " + matrix(m, m).str() + ", but " +
                       describe("weightGram", weight_gram.shape()) + " and " + describe("weight", w));
    }
    Napi::Env env = info.Env();
    Napi::Object result = Napi::Object::New(env);
    float* grad_a = nullptr;
    float* grad_b = nullptr;
    if (compute_gradients) {
      TensorHandle* handle = nullptr;
      result.Set("gradA", TensorHandle::allocate(env, a, &handle));
      grad_a = handle->data();
      result.Set("gradB", TensorHandle::allocate(env, lora_b.shape(), &handle));
      grad_b = handle->data();
    }
    const double value =
        cpu::orthogonality_penalty(grad_a, grad_b, weight.data(), weight_gram.data(), lora_a.data(), lora_b.data(),
                                   static_cast<float>(scale), static_cast<float>(eps), m, k, r);
    result.Set("value", Napi::Number::New(env, value));
    return result;
  });
}

}  // namespace

void register_optim(Napi::Env env, Napi::Object exports) {
  exports.Set("adamwStep", Napi::Function::New<adamw_step>(env, "adamwStep"));
  exports.Set("sgdStep", Napi::Function::New<sgd_step>(env, "sgdStep"));
  exports.Set("axpyList", Napi::Function::New<axpy_list>(env, "axpyList"));
  exports.Set("scaleList", Napi::Function::New<scale_list>(env, "scaleList"));
  exports.Set("combineHypergradient", Napi::Function::New<combine_hypergradient>(env, "combineHypergradient"));
  exports.Set("orthogonalityPenalty", Napi::Function::New<orthogonality_penalty>(env, "orthogonalityPenalty"));
}

}  // namespace bidora::binding
