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

// [sync] matmul({ a, b, transposeA?, transposeB? }), linear({ input [..., K], weight [M, K], bias? [M] }).
struct ProductArgs {
  TensorHandle *a, *b, *bias;
  bool transpose_a = false, transpose_b = false;
  rules::Product product;
  float* out;
};
using P = ProductArgs;

const OpSpec<P> kMatmul(
    "matmul", Runs::kAny, kernel<&ops::Backend::matmul>,
    {arg<&P::a>("a"), arg<&P::b>("b"), arg<&P::transpose_a>("transposeA"), arg<&P::transpose_b>("transposeB"),
     out<&P::out, &P::product, &rules::Product::out>()},
    [](const char* fn, P& args) {
      args.product = rules::matmul(fn, args.a->shape(), args.b->shape(), args.transpose_a, args.transpose_b);
    },
    [](const Call& call, P& args) {
      const rules::Product& p = args.product;
      call.backend.matmul({args.out, args.a->data(), args.b->data(), p.batch, p.m, p.n, p.k, args.transpose_a,
                           args.transpose_b, p.shared_b, gemm_precision()});
    });

const OpSpec<P> kLinear(
    "linear", Runs::kAny, kernel<&ops::Backend::linear>,
    {arg<&P::a>("input"), arg<&P::b>("weight"), arg<&P::bias>("bias", kOptional),
     out<&P::out, &P::product, &rules::Product::out>()},
    [](const char* fn, P& args) {
      args.product =
          rules::linear(fn, args.a->shape(), args.b->shape(), args.bias != nullptr ? &args.bias->shape() : nullptr);
    },
    [](const Call& call, P& args) {
      const rules::Product& p = args.product;
      call.backend.linear({.out = args.out,
                           .input = args.a->data(),
                           .weight = args.b->data(),
                           .bias = args.bias != nullptr ? args.bias->data() : nullptr,
                           .rows = p.batch,
                           .m = p.n,
                           .k = p.k,
                           .precision = gemm_precision()});
    });

}  // namespace

ops::Precision gemm_precision() { return matmul_precision.load(); }

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

}  // namespace bidora::binding
