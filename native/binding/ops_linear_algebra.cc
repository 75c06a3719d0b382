// matmul and linear, declared with op.h (one backend call each on the operands' device), and the process-wide
// rounding of GPU products, setMatmulPrecision.
#include <atomic>

#include "op.h"

namespace bidora::binding {

namespace {

// As PyTorch's set_float32_matmul_precision: 'highest' keeps float32, 'high' rounds GPU products' inputs to TF32 and
// 'medium' to BF16 for the tensor cores (float32 accumulation either way). The CPU is always float32.
std::atomic<ops::Precision> matmul_precision{ops::Precision::kFloat32};
const char* const kPrecisionNames[] = {"highest", "high", "medium"};  // by ops::Precision

// [sync] matmul({ a, b, transposeA?, transposeB? }): a [..., M, K] (or [..., K, M] transposed) times b [..., K, N]
// (or [..., N, K]); batch dims equal, or b of rank 2 shared by every batch. Throws TypeError, RangeError (rank below
// 2, mismatched dims).
struct MatmulArgs {
  TensorHandle *a, *b;
  bool transpose_a = false, transpose_b = false;
  rules::Product product;
};

const OpSpec<MatmulArgs> kMatmul(
    "matmul", Runs::kAny, kernel<&ops::Backend::matmul>,
    {arg<&MatmulArgs::a>("a"), arg<&MatmulArgs::b>("b"), arg<&MatmulArgs::transpose_a>("transposeA"),
     arg<&MatmulArgs::transpose_b>("transposeB")},
    [](const char* fn, MatmulArgs& args) {
      args.product = rules::matmul(fn, args.a->shape(), args.b->shape(), args.transpose_a, args.transpose_b);
    },
    [](const Call& call, MatmulArgs& args) -> Napi::Value {
      const rules::Product& p = args.product;
      float* out;
      Napi::Object result = call.output(p.out, &out);
      call.backend.matmul({out, args.a->data(), args.b->data(), p.batch, p.m, p.n, p.k, args.transpose_a,
                           args.transpose_b, p.shared_b, gemm_precision()});
      return result;
    });

// [sync] linear({ input [..., K], weight [M, K], bias? [M] }): [..., M] = input weightᵀ + bias. Throws TypeError,
// RangeError (weight not of rank 2, K or M mismatched).
struct LinearArgs {
  TensorHandle *input, *weight, *bias;
  rules::Product product;
};

const OpSpec<LinearArgs> kLinear(
    "linear", Runs::kAny, kernel<&ops::Backend::linear>,
    {arg<&LinearArgs::input>("input"), arg<&LinearArgs::weight>("weight"), arg<&LinearArgs::bias>("bias", kOptional)},
    [](const char* fn, LinearArgs& args) {
      const Shape* bias = args.bias != nullptr ? &args.bias->shape() : nullptr;
      args.product = rules::linear(fn, args.input->shape(), args.weight->shape(), bias);
    },
    [](const Call& call, LinearArgs& args) -> Napi::Value {
      const rules::Product& p = args.product;
      float* out;
      Napi::Object result = call.output(p.out, &out);
      call.backend.linear({.out = out,
                           .input = args.input->data(),
                           .weight = args.weight->data(),
                           .bias = args.bias != nullptr ? args.bias->data() : nullptr,
                           .rows = p.batch,
                           .m = p.n,
                           .k = p.k,
                           .precision = gemm_precision()});
      return result;
    });

// [sync] setMatmulPrecision(precision: 'highest' | 'high' | 'medium'): string - the previous setting. A process-wide
// knob, not an op: one plain argument. Throws TypeError (not a string), RangeError (another name).
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

}  // namespace

ops::Precision gemm_precision() { return matmul_precision.load(); }

void register_linear_algebra(Napi::Env env, Napi::Object exports) {
  exports.Set("setMatmulPrecision", Napi::Function::New<set_matmul_precision>(env, "setMatmulPrecision"));
  register_ops(env, exports, kMatmul, kLinear);
}

}  // namespace bidora::binding
