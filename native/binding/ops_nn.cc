// Node-API glue for the neural-network kernels: activations, layer norm, softmax, embedding, losses, permutes.
// Every function is [sync], returns fresh tensor handles and checks every argument before a kernel runs; integer ids
// and labels arrive as Int32Arrays (viewed without copying) and are range-checked here, so kernels index safely.
// Every op runs on its tensors' device: ids and labels are checked on the host, then copied to device scratch.
#include <string>
#include <vector>

#include "../cpu/nn.h"
#include "../cpu/random.h"
#include "args.h"
#include "gpu.h"
#include "ops.h"
#include "tensor_handle.h"

namespace bidora::binding {

namespace {

constexpr int64_t kMaxSafeInteger = 9007199254740991;
constexpr int64_t kMaxInt32 = 2147483647;

// A fresh tensor on `device`; *data is its contents there (a GPU pointer for kCuda).
Napi::Object new_tensor(Napi::Env env, const Shape& shape, float** data, Device device = Device::kCpu) {
  TensorHandle* handle = nullptr;
  Napi::Object object = TensorHandle::allocate(env, shape, &handle, device);
  *data = handle->data();
  return object;
}

Shape shape_of(std::vector<int64_t> dims, const char* argument) { return Shape::from(dims, argument); }

std::string both(const char* first, const Shape& a, const char* second, const Shape& b) {
  return describe(first, a) + " and " + describe(second, b);
}

void require_same_shape(const char* fn, const char* reference_name, TensorHandle& reference, const char* name,
                        TensorHandle& tensor) {
  if (tensor.shape() != reference.shape()) {
    throw RangeError(std::string(fn) + ": " + name + " must have the shape of " + reference_name + ", but " +
                     both(reference_name, reference.shape(), name, tensor.shape()));
  }
}

void require_vector(const char* fn, const char* name, TensorHandle& tensor, int64_t length, const char* reference_name,
                    const Shape& reference) {
  const Shape& shape = tensor.shape();
  if (shape.rank != 1 || shape[0] != length) {
    throw RangeError(std::string(fn) + ": expected " + name + " of shape [" + std::to_string(length) + "], but " +
                     both(name, shape, reference_name, reference));
  }
}

// The product of every dim but the last: the rows a [..., D] tensor is read as, even when D is 0.
int64_t leading_rows(const Shape& shape) {
  int64_t rows = 1;
  for (int axis = 0; axis + 1 < shape.rank; ++axis) rows *= shape[axis];
  return rows;
}

struct IntegerArray {
  const int32_t* data;
  int64_t length;
};

// An Int32Array viewed without copying (its byteOffset respected by Node-API).
IntegerArray int32_array_arg(const Arg& arg) {
  Napi::Value value = arg.value();
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    throw bidora::TypeError(arg.where() + " must be an Int32Array");
  }
  Napi::Int32Array array = value.As<Napi::Int32Array>();
  return {array.Data(), static_cast<int64_t>(array.ElementLength())};
}

// Every entry in [0, limit), or equal to *ignored when given. `what` names the limit in the message.
void check_indices(const char* fn, const char* name, const IntegerArray& values, int64_t limit, const char* what,
                   const int32_t* ignored = nullptr) {
  for (int64_t position = 0; position < values.length; ++position) {
    const int32_t value = values.data[position];
    if (ignored != nullptr && value == *ignored) continue;
    if (value < 0 || value >= limit) {
      throw RangeError(std::string(fn) + ": " + name + "[" + std::to_string(position) + "] is " +
                       std::to_string(value) + ", outside [0, " + std::to_string(limit) + ") (" + what + ")" +
                       (ignored != nullptr ? " and not ignoreIndex " + std::to_string(*ignored) : ""));
    }
  }
}

#if BIDORA_HAVE_CUDA
// A device copy of checked ids or labels, in scratch `slot` (valid until the next use of that slot).
const int32_t* device_ints(int slot, const int32_t* host, int64_t count, const char* fn) {
  auto* device = static_cast<int32_t*>(cuda::scratch(slot, static_cast<size_t>(count) * sizeof(int32_t), fn));
  cuda::copy_ints_to_device(device, host, count, fn);
  return device;
}
#endif

// ---- activations ----

using UnaryKernel = void (*)(float*, const float*, int64_t);
using BackwardKernel = void (*)(float*, const float*, const float*, int64_t);
#if BIDORA_HAVE_CUDA
using GpuUnaryKernel = void (*)(float*, const float*, int64_t, cudaStream_t);
using GpuBackwardKernel = void (*)(float*, const float*, const float*, int64_t, cudaStream_t);
#define BIDORA_GPU(kernel) cuda::kernel
#else
using GpuUnaryKernel = void*;
using GpuBackwardKernel = void*;
#define BIDORA_GPU(kernel) nullptr
#endif

// y = f(x) elementwise, on x's device.
template <UnaryKernel Kernel, GpuUnaryKernel GpuKernel>
Napi::Value unary(const Napi::CallbackInfo& info, const char* fn) {
  return guarded(info, [&]() -> Napi::Value {
    TensorHandle& x = any_tensor_arg({info, 0, fn, "x"});
    float* out = nullptr;
    Napi::Object result = new_tensor(info.Env(), x.shape(), &out, x.device());
    if (x.numel() == 0) return result;
#if BIDORA_HAVE_CUDA
    if (x.device() == Device::kCuda) {
      GpuKernel(out, x.data(), x.numel(), nullptr);
      cuda::check_launch(fn);
      return result;
    }
#endif
    Kernel(out, x.data(), x.numel());
    return result;
  });
}

// The saved tensor (x or output) first, then gradOutput of the same shape, on their device.
template <BackwardKernel Kernel, GpuBackwardKernel GpuKernel>
Napi::Value unary_backward(const Napi::CallbackInfo& info, const char* fn, const char* saved_name) {
  return guarded(info, [&]() -> Napi::Value {
    TensorHandle& saved = any_tensor_arg({info, 0, fn, saved_name});
    TensorHandle& grad_output = any_tensor_arg({info, 1, fn, "gradOutput"});
    const Device device = same_device(fn, {{saved_name, &saved}, {"gradOutput", &grad_output}});
    require_same_shape(fn, saved_name, saved, "gradOutput", grad_output);
    float* grad = nullptr;
    Napi::Object result = new_tensor(info.Env(), saved.shape(), &grad, device);
    if (saved.numel() == 0) return result;
#if BIDORA_HAVE_CUDA
    if (device == Device::kCuda) {
      GpuKernel(grad, saved.data(), grad_output.data(), saved.numel(), nullptr);
      cuda::check_launch(fn);
      return result;
    }
#endif
    Kernel(grad, saved.data(), grad_output.data(), saved.numel());
    return result;
  });
}

// [sync] gelu(x) / relu(x) / tanh(x): TensorHandle shaped like x, on x's device. GELU is the erf form. Throws
// TypeError.
Napi::Value gelu_forward(const Napi::CallbackInfo& info) {
  return unary<cpu::gelu_forward, BIDORA_GPU(gelu_forward)>(info, "gelu");
}
Napi::Value relu_forward(const Napi::CallbackInfo& info) {
  return unary<cpu::relu_forward, BIDORA_GPU(relu_forward)>(info, "relu");
}
Napi::Value tanh_forward(const Napi::CallbackInfo& info) {
  return unary<cpu::tanh_forward, BIDORA_GPU(tanh_forward)>(info, "tanh");
}

// [sync] geluBackward(x, gradOutput) / reluBackward(x, gradOutput) / tanhBackward(output, gradOutput): the input
// gradient, on the tensors' device. Throws TypeError (not a live tensor, tensors on different devices), RangeError
// (gradOutput's shape differs).
Napi::Value gelu_backward(const Napi::CallbackInfo& info) {
  return unary_backward<cpu::gelu_backward, BIDORA_GPU(gelu_backward)>(info, "geluBackward", "x");
}
Napi::Value relu_backward(const Napi::CallbackInfo& info) {
  return unary_backward<cpu::relu_backward, BIDORA_GPU(relu_backward)>(info, "reluBackward", "x");
}
Napi::Value tanh_backward(const Napi::CallbackInfo& info) {
  return unary_backward<cpu::tanh_backward, BIDORA_GPU(tanh_backward)>(info, "tanhBackward", "output");
}

#undef BIDORA_GPU

// ---- layer norm ----

// The last axis D of x, which must exist and be non-empty (the mean of nothing has no value).
int64_t normalized_width(const char* fn, const char* name, const Shape& x) {
  if (x.rank < 1 || x.last() < 1) {
    throw RangeError(std::string(fn) + ": " + name + " must have rank 1 to 4 and a non-empty last axis, but " +
                     describe(name, x));
  }
  return x.last();
}

// [sync] layerNorm(x, gamma, beta, eps) -> { output, mean, rstd }: over the last axis D of x; gamma and beta [D];
// mean and rstd [rows] (saved for backward); all on the tensors' device. Throws TypeError (tensors on different
// devices too), RangeError (shapes, eps not positive).
Napi::Value layer_norm(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "layerNorm";
    TensorHandle& x = any_tensor_arg({info, 0, fn, "x"});
    TensorHandle& gamma = any_tensor_arg({info, 1, fn, "gamma"});
    TensorHandle& beta = any_tensor_arg({info, 2, fn, "beta"});
    const Device device = same_device(fn, {{"x", &x}, {"gamma", &gamma}, {"beta", &beta}});
    const double eps = number_arg({info, 3, fn, "eps"});
    if (eps <= 0) throw RangeError(std::string(fn) + ": eps must be positive, got " + std::to_string(eps));
    const int64_t d = normalized_width(fn, "x", x.shape());
    require_vector(fn, "gamma", gamma, d, "x", x.shape());
    require_vector(fn, "beta", beta, d, "x", x.shape());
    const int64_t rows = leading_rows(x.shape());
    Napi::Env env = info.Env();
    float *output = nullptr, *mean = nullptr, *rstd = nullptr;
    Napi::Object result = Napi::Object::New(env);
    result.Set("output", new_tensor(env, x.shape(), &output, device));
    result.Set("mean", new_tensor(env, shape_of({rows}, "mean"), &mean, device));
    result.Set("rstd", new_tensor(env, shape_of({rows}, "rstd"), &rstd, device));
    if (rows == 0) return result;
#if BIDORA_HAVE_CUDA
    if (device == Device::kCuda) {
      cuda::layer_norm_forward(output, mean, rstd, x.data(), gamma.data(), beta.data(), static_cast<float>(eps), rows,
                               d, nullptr);
      cuda::check_launch(fn);
      return result;
    }
#endif
    cpu::layer_norm_forward(output, mean, rstd, x.data(), gamma.data(), beta.data(), static_cast<float>(eps), rows, d);
    return result;
  });
}

// [sync] layerNormBackward(gradOutput, x, gamma, mean, rstd) -> { input, gamma, beta }: gradients of x, gamma and
// beta from layerNorm's saved mean and rstd, on the tensors' device. Throws TypeError (tensors on different devices
// too), RangeError (shapes).
Napi::Value layer_norm_backward(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "layerNormBackward";
    TensorHandle& grad_output = any_tensor_arg({info, 0, fn, "gradOutput"});
    TensorHandle& x = any_tensor_arg({info, 1, fn, "x"});
    TensorHandle& gamma = any_tensor_arg({info, 2, fn, "gamma"});
    TensorHandle& mean = any_tensor_arg({info, 3, fn, "mean"});
    TensorHandle& rstd = any_tensor_arg({info, 4, fn, "rstd"});
    const Device device =
        same_device(fn, {{"gradOutput", &grad_output}, {"x", &x}, {"gamma", &gamma}, {"mean", &mean}, {"rstd", &rstd}});
    const int64_t d = normalized_width(fn, "x", x.shape());
    require_same_shape(fn, "x", x, "gradOutput", grad_output);
    require_vector(fn, "gamma", gamma, d, "x", x.shape());
    const int64_t rows = leading_rows(x.shape());
    require_vector(fn, "mean", mean, rows, "x", x.shape());
    require_vector(fn, "rstd", rstd, rows, "x", x.shape());
    Napi::Env env = info.Env();
    float *grad_input = nullptr, *grad_gamma = nullptr, *grad_beta = nullptr;
    Napi::Object result = Napi::Object::New(env);
    result.Set("input", new_tensor(env, x.shape(), &grad_input, device));
    result.Set("gamma", new_tensor(env, gamma.shape(), &grad_gamma, device));
    result.Set("beta", new_tensor(env, gamma.shape(), &grad_beta, device));
#if BIDORA_HAVE_CUDA
    if (device == Device::kCuda) {
      // Writes grad_gamma and grad_beta (zeros) even when rows is 0; d is at least 1 here.
      cuda::layer_norm_backward(grad_input, grad_gamma, grad_beta, grad_output.data(), x.data(), gamma.data(),
                                mean.data(), rstd.data(), rows, d, nullptr);
      cuda::check_launch(fn);
      return result;
    }
#endif
    cpu::layer_norm_backward(grad_input, grad_gamma, grad_beta, grad_output.data(), x.data(), gamma.data(), mean.data(),
                             rstd.data(), rows, d);
    return result;
  });
}

// ---- softmax ----

// [sync] softmax(x, mask | undefined): over the last axis. mask [x.shape[0], x.shape[last]] broadcasts over the
// middle axes (a [batch, key] padding mask on [batch, heads, query, key] scores); 0 masks, any other value attends;
// masked entries are exactly 0 and a fully masked row is all zeros. Runs on the tensors' device. Throws TypeError
// (x and mask on different devices too), RangeError (x of rank 0, or rank 1 with a mask; mask's shape).
Napi::Value softmax(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "softmax";
    TensorHandle& x = any_tensor_arg({info, 0, fn, "x"});
    TensorHandle* mask = optional_any_tensor_arg({info, 1, fn, "mask"});
    const Device device = same_device(fn, {{"x", &x}, {"mask", mask}});
    const Shape& shape = x.shape();
    if (shape.rank < 1) throw RangeError(std::string(fn) + ": x must have rank 1 to 4, but " + describe("x", shape));
    const int64_t d = shape.last();
    int64_t batch = 1, rows_per_batch = leading_rows(shape);
    if (mask != nullptr) {
      if (shape.rank < 2) {
        throw RangeError(std::string(fn) + ": a mask needs x of rank 2 to 4 ([batch, ..., key]), but " +
                         describe("x", shape));
      }
      const Shape& mask_shape = mask->shape();
      batch = shape[0];
      if (mask_shape.rank != 2 || mask_shape[0] != batch || mask_shape[1] != d) {
        throw RangeError(std::string(fn) + ": expected mask of shape [" + std::to_string(batch) + ", " +
                         std::to_string(d) + "] (x's first and last dims), but " +
                         both("mask", mask_shape, "x", shape));
      }
      rows_per_batch = batch == 0 ? 0 : leading_rows(shape) / batch;
    }
    float* out = nullptr;
    Napi::Object result = new_tensor(info.Env(), shape, &out, device);
    if (x.numel() == 0) return result;
    const float* mask_data = mask == nullptr ? nullptr : mask->data();
#if BIDORA_HAVE_CUDA
    if (device == Device::kCuda) {
      cuda::softmax_forward(out, x.data(), mask_data, batch, rows_per_batch, d, nullptr);
      cuda::check_launch(fn);
      return result;
    }
#endif
    cpu::softmax_forward(out, x.data(), mask_data, batch, rows_per_batch, d);
    return result;
  });
}

// [sync] softmaxBackward(output, gradOutput): output ⊙ (gradOutput − Σ gradOutput·output) per row, on the tensors'
// device. Throws TypeError (tensors on different devices too), RangeError (shapes differ, rank 0).
Napi::Value softmax_backward(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "softmaxBackward";
    TensorHandle& output = any_tensor_arg({info, 0, fn, "output"});
    TensorHandle& grad_output = any_tensor_arg({info, 1, fn, "gradOutput"});
    const Device device = same_device(fn, {{"output", &output}, {"gradOutput", &grad_output}});
    require_same_shape(fn, "output", output, "gradOutput", grad_output);
    const Shape& shape = output.shape();
    if (shape.rank < 1) {
      throw RangeError(std::string(fn) + ": output must have rank 1 to 4, but " + describe("output", shape));
    }
    float* grad = nullptr;
    Napi::Object result = new_tensor(info.Env(), shape, &grad, device);
    if (output.numel() == 0) return result;
#if BIDORA_HAVE_CUDA
    if (device == Device::kCuda) {
      cuda::softmax_backward(grad, output.data(), grad_output.data(), leading_rows(shape), shape.last(), nullptr);
      cuda::check_launch(fn);
      return result;
    }
#endif
    cpu::softmax_backward(grad, output.data(), grad_output.data(), leading_rows(shape), shape.last());
    return result;
  });
}

// ---- embedding ----

// [sync] embedding(weight, ids: Int32Array): [ids.length, D] rows of weight [V, D], on weight's device. Throws
// TypeError (ids not an Int32Array), RangeError (weight not rank 2, an id outside [0, V), naming its position and
// value).
Napi::Value embedding(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "embedding";
    TensorHandle& weight = any_tensor_arg({info, 0, fn, "weight"});
    const Device device = same_device(fn, {{"weight", &weight}});
    const IntegerArray ids = int32_array_arg({info, 1, fn, "ids"});
    const Shape& shape = weight.shape();
    if (shape.rank != 2) {
      throw RangeError(std::string(fn) + ": expected weight of rank 2 [vocab, dim], but " + describe("weight", shape));
    }
    check_indices(fn, "ids", ids, shape[0], "the vocabulary size, weight's first dim");
    float* out = nullptr;
    Napi::Object result = new_tensor(info.Env(), shape_of({ids.length, shape[1]}, "output"), &out, device);
    if (ids.length == 0 || shape[1] == 0) return result;
#if BIDORA_HAVE_CUDA
    if (device == Device::kCuda) {
      const int32_t* device_ids = device_ints(0, ids.data, ids.length, fn);
      cuda::embedding_forward(out, weight.data(), device_ids, ids.length, shape[1], nullptr);
      cuda::check_launch(fn);
      return result;
    }
#endif
    cpu::embedding_forward(out, weight.data(), ids.data, ids.length, shape[1]);
    return result;
  });
}

// [sync] embeddingBackward(gradOutput, ids: Int32Array, vocabSize): [vocabSize, D], the rows of gradOutput [..., D]
// (ids.length rows) added at their ids, deterministically, on gradOutput's device. Throws TypeError, RangeError
// (shapes, ids, vocabSize; on the GPU, more than 2^31 − 1 ids).
Napi::Value embedding_backward(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "embeddingBackward";
    TensorHandle& grad_output = any_tensor_arg({info, 0, fn, "gradOutput"});
    const Device device = same_device(fn, {{"gradOutput", &grad_output}});
    const IntegerArray ids = int32_array_arg({info, 1, fn, "ids"});
    const int64_t vocab_size = integer_arg({info, 2, fn, "vocabSize"}, 1, kMaxInt32);
    const Shape& shape = grad_output.shape();
    if (shape.rank < 2 || leading_rows(shape) != ids.length) {
      throw RangeError(std::string(fn) + ": expected gradOutput of shape [" + std::to_string(ids.length) +
                       ", dim] (one row per id), but " + describe("gradOutput", shape) + " and ids has length " +
                       std::to_string(ids.length));
    }
    check_indices(fn, "ids", ids, vocab_size, "vocabSize");
    const int64_t d = shape.last();
    float* grad_weight = nullptr;
    Napi::Object result = new_tensor(info.Env(), shape_of({vocab_size, d}, "vocabSize"), &grad_weight, device);
    if (d == 0) return result;
#if BIDORA_HAVE_CUDA
    if (device == Device::kCuda) {
      // The plan holds positions and counts as int32.
      if (ids.length > kMaxInt32) {
        throw RangeError(std::string(fn) + ": on 'cuda' ids may hold at most " + std::to_string(kMaxInt32) +
                         " entries, but has " + std::to_string(ids.length));
      }
      // The stable counting sort runs here, where the ids are; the kernel sums each row's positions in that order.
      std::vector<int32_t> order(static_cast<size_t>(ids.length)), row_start(static_cast<size_t>(vocab_size) + 1);
      cuda::embedding_backward_plan(order.data(), row_start.data(), ids.data, ids.length, vocab_size);
      const int32_t* device_order = device_ints(0, order.data(), ids.length, fn);
      const int32_t* device_row_start = device_ints(1, row_start.data(), vocab_size + 1, fn);
      cuda::embedding_backward(grad_weight, grad_output.data(), device_order, device_row_start, vocab_size, d, nullptr);
      cuda::check_launch(fn);
      return result;
    }
#endif
    cpu::embedding_backward(grad_weight, grad_output.data(), ids.data, ids.length, vocab_size, d);
    return result;
  });
}

// ---- permute ----

// [sync] permute0213(x [a, b, c, d]): [a, c, b, d] (splitting and merging attention heads), on x's device. Throws
// TypeError, RangeError (x not of rank 4).
Napi::Value permute0213(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "permute0213";
    TensorHandle& x = any_tensor_arg({info, 0, fn, "x"});
    const Shape& shape = x.shape();
    if (shape.rank != 4) throw RangeError(std::string(fn) + ": expected x of rank 4, but " + describe("x", shape));
    float* out = nullptr;
    Napi::Object result =
        new_tensor(info.Env(), shape_of({shape[0], shape[2], shape[1], shape[3]}, "output"), &out, x.device());
    if (x.numel() == 0) return result;
#if BIDORA_HAVE_CUDA
    if (x.device() == Device::kCuda) {
      cuda::permute_0213(out, x.data(), shape[0], shape[1], shape[2], shape[3], nullptr);
      cuda::check_launch(fn);
      return result;
    }
#endif
    cpu::permute_0213(out, x.data(), shape[0], shape[1], shape[2], shape[3]);
    return result;
  });
}

// ---- losses ----

struct Classification {
  TensorHandle* logits;  // on any device
  IntegerArray labels;
  int32_t ignore_index;
  int64_t rows, classes;
};

Classification classification_args(const Napi::CallbackInfo& info, const char* fn) {
  Classification args{&any_tensor_arg({info, 0, fn, "logits"}), int32_array_arg({info, 1, fn, "labels"}), 0, 0, 0};
  args.ignore_index = static_cast<int32_t>(integer_arg({info, 2, fn, "ignoreIndex"}, -kMaxInt32 - 1, kMaxInt32));
  const Shape& shape = args.logits->shape();
  if (shape.rank != 2 || shape[1] < 1) {
    throw RangeError(std::string(fn) + ": expected logits of shape [rows, classes] with classes >= 1, but " +
                     describe("logits", shape));
  }
  if (args.labels.length != shape[0]) {
    throw RangeError(std::string(fn) + ": labels must hold one label per row of logits, but labels has length " +
                     std::to_string(args.labels.length) + " and " + describe("logits", shape));
  }
  args.rows = shape[0];
  args.classes = shape[1];
  check_indices(fn, "labels", args.labels, args.classes, "the number of classes", &args.ignore_index);
  return args;
}

// [sync] crossEntropy(logits [N, C], labels: Int32Array (N), ignoreIndex): rank-0 tensor on logits' device, the mean
// over rows whose label is not ignoreIndex of −log softmax(logits)[label]; 0 when every row is ignored. Throws
// TypeError, RangeError (shapes, a label outside [0, C) that is not ignoreIndex, naming its position and value).
Napi::Value cross_entropy(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "crossEntropy";
    const Classification args = classification_args(info, fn);
    const Device device = same_device(fn, {{"logits", args.logits}});
    float* loss = nullptr;
    Napi::Object result = new_tensor(info.Env(), Shape(), &loss, device);
#if BIDORA_HAVE_CUDA
    if (device == Device::kCuda) {
      // Writes the loss (0 for no rows) into the rank-0 device tensor, as the CPU kernel does on the host.
      const int32_t* labels = device_ints(0, args.labels.data, args.rows, fn);
      auto* row_losses = static_cast<float*>(cuda::scratch(1, static_cast<size_t>(args.rows) * sizeof(float), fn));
      cuda::cross_entropy_forward(loss, row_losses, args.logits->data(), labels, args.ignore_index, args.rows,
                                  args.classes, nullptr);
      cuda::check_launch(fn);
      return result;
    }
#endif
    cpu::cross_entropy_forward(loss, args.logits->data(), args.labels.data, args.ignore_index, args.rows, args.classes);
    return result;
  });
}

// [sync] crossEntropyBackward(logits, labels, ignoreIndex, gradLoss: number): dLogits [N, C] = gradLoss ·
// (softmax − onehot) / counted rows, zero rows where ignored, on logits' device. Throws as crossEntropy, and
// RangeError (gradLoss not finite).
Napi::Value cross_entropy_backward(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "crossEntropyBackward";
    const Classification args = classification_args(info, fn);
    const Device device = same_device(fn, {{"logits", args.logits}});
    const double grad_loss = number_arg({info, 3, fn, "gradLoss"});
    float* grad = nullptr;
    Napi::Object result = new_tensor(info.Env(), args.logits->shape(), &grad, device);
#if BIDORA_HAVE_CUDA
    if (device == Device::kCuda) {
      const int32_t* labels = device_ints(0, args.labels.data, args.rows, fn);
      auto* row_scale = static_cast<float*>(cuda::scratch(1, sizeof(float), fn));
      cuda::cross_entropy_backward(grad, row_scale, args.logits->data(), labels, args.ignore_index,
                                   static_cast<float>(grad_loss), args.rows, args.classes, nullptr);
      cuda::check_launch(fn);
      return result;
    }
#endif
    cpu::cross_entropy_backward(grad, args.logits->data(), args.labels.data, args.ignore_index,
                                static_cast<float>(grad_loss), args.rows, args.classes);
    return result;
  });
}

// [sync] mseLoss(prediction, target): rank-0 tensor, the mean of squared differences (0 when empty), on their device.
// Throws TypeError (devices differ), RangeError (shapes differ).
Napi::Value mse_loss(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "mseLoss";
    TensorHandle& prediction = any_tensor_arg({info, 0, fn, "prediction"});
    TensorHandle& target = any_tensor_arg({info, 1, fn, "target"});
    const Device device = same_device(fn, {{"prediction", &prediction}, {"target", &target}});
    require_same_shape(fn, "prediction", prediction, "target", target);
    float* loss = nullptr;
    Napi::Object result = new_tensor(info.Env(), Shape(), &loss, device);
#if BIDORA_HAVE_CUDA
    if (device == Device::kCuda) {
      cuda::mse_loss_forward(loss, prediction.data(), target.data(), prediction.numel(), nullptr);
      cuda::check_launch(fn);
      return result;
    }
#endif
    cpu::mse_loss_forward(loss, prediction.data(), target.data(), prediction.numel());
    return result;
  });
}

// [sync] mseLossBackward(prediction, target, gradLoss: number): 2 · gradLoss · (prediction − target) / n, on their
// device. Throws TypeError (devices differ), RangeError (shapes differ, gradLoss not finite).
Napi::Value mse_loss_backward(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "mseLossBackward";
    TensorHandle& prediction = any_tensor_arg({info, 0, fn, "prediction"});
    TensorHandle& target = any_tensor_arg({info, 1, fn, "target"});
    const Device device = same_device(fn, {{"prediction", &prediction}, {"target", &target}});
    require_same_shape(fn, "prediction", prediction, "target", target);
    const double grad_loss = number_arg({info, 2, fn, "gradLoss"});
    float* grad = nullptr;
    Napi::Object result = new_tensor(info.Env(), prediction.shape(), &grad, device);
#if BIDORA_HAVE_CUDA
    if (device == Device::kCuda) {
      cuda::mse_loss_backward(grad, prediction.data(), target.data(), static_cast<float>(grad_loss), prediction.numel(),
                              nullptr);
      cuda::check_launch(fn);
      return result;
    }
#endif
    if (prediction.numel() > 0) {
      cpu::mse_loss_backward(grad, prediction.data(), target.data(), static_cast<float>(grad_loss), prediction.numel());
    }
    return result;
  });
}

// ---- dropout ----

// [sync] dropout(x, p, seed): x ⊙ keep / (1 − p), keep_i drawn from (seed, i) alone, so the same seed and size give
// the same mask: backward calls dropout(gradOutput, p, seed). p in [0, 1] (1 drops everything); seed an integer
// from 0 to 2^53 − 1. On x's device, with the same mask on both. Throws TypeError, RangeError (p or seed out of
// range).
Napi::Value dropout(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const char* fn = "dropout";
    TensorHandle& x = any_tensor_arg({info, 0, fn, "x"});
    const double p = number_arg({info, 1, fn, "p"});
    if (p < 0 || p > 1) throw RangeError(std::string(fn) + ": p must be in [0, 1], got " + std::to_string(p));
    const auto seed = static_cast<uint64_t>(integer_arg({info, 2, fn, "seed"}, 0, kMaxSafeInteger));
    float* out = nullptr;
    Napi::Object result = new_tensor(info.Env(), x.shape(), &out, x.device());
#if BIDORA_HAVE_CUDA
    if (x.device() == Device::kCuda) {
      cuda::dropout(out, x.data(), x.numel(), static_cast<float>(p), seed, nullptr);
      cuda::check_launch(fn);
      return result;
    }
#endif
    if (x.numel() > 0) cpu::dropout(out, x.data(), x.numel(), static_cast<float>(p), seed);
    return result;
  });
}

}  // namespace

void register_nn(Napi::Env env, Napi::Object exports) {
  exports.Set("gelu", Napi::Function::New<gelu_forward>(env, "gelu"));
  exports.Set("geluBackward", Napi::Function::New<gelu_backward>(env, "geluBackward"));
  exports.Set("relu", Napi::Function::New<relu_forward>(env, "relu"));
  exports.Set("reluBackward", Napi::Function::New<relu_backward>(env, "reluBackward"));
  exports.Set("tanh", Napi::Function::New<tanh_forward>(env, "tanh"));
  exports.Set("tanhBackward", Napi::Function::New<tanh_backward>(env, "tanhBackward"));
  exports.Set("layerNorm", Napi::Function::New<layer_norm>(env, "layerNorm"));
  exports.Set("layerNormBackward", Napi::Function::New<layer_norm_backward>(env, "layerNormBackward"));
  exports.Set("softmax", Napi::Function::New<softmax>(env, "softmax"));
  exports.Set("softmaxBackward", Napi::Function::New<softmax_backward>(env, "softmaxBackward"));
  exports.Set("embedding", Napi::Function::New<embedding>(env, "embedding"));
  exports.Set("embeddingBackward", Napi::Function::New<embedding_backward>(env, "embeddingBackward"));
  exports.Set("permute0213", Napi::Function::New<permute0213>(env, "permute0213"));
  exports.Set("crossEntropy", Napi::Function::New<cross_entropy>(env, "crossEntropy"));
  exports.Set("crossEntropyBackward", Napi::Function::New<cross_entropy_backward>(env, "crossEntropyBackward"));
  exports.Set("mseLoss", Napi::Function::New<mse_loss>(env, "mseLoss"));
  exports.Set("mseLossBackward", Napi::Function::New<mse_loss_backward>(env, "mseLossBackward"));
  exports.Set("dropout", Napi::Function::New<dropout>(env, "dropout"));
}

}  // namespace bidora::binding
