// matmul and linear, declared with op.h: shape checks and one backend call each on the operands' device; and the
// process-wide rounding of GPU products (setMatmulPrecision).
#include <atomic>
#include <string>

#include "op.h"

namespace bidora::binding {

namespace {

// How GPU products round their inputs, as PyTorch's set_float32_matmul_precision: 'highest' keeps float32, 'high'
// rounds to TF32 and 'medium' to BF16 for the tensor cores (float32 accumulation either way). The CPU is always
// float32. Process-wide.
std::atomic<ops::Precision> matmul_precision{ops::Precision::kFloat32};

const char* precision_name(ops::Precision precision) {
  switch (precision) {
    case ops::Precision::kTf32:
      return "high";
    case ops::Precision::kBf16:
      return "medium";
    default:
      return "highest";
  }
}

std::string two_shapes(const char* first, const Shape& a, const char* second, const Shape& b) {
  return describe(first, a) + " and " + describe(second, b);
}

// [sync] matmul({ a, b, transposeA?, transposeB? }): TensorHandle
// a [..., M, K] (or [..., K, M] transposed), b [..., K, N] (or [..., N, K]); batch dims equal, or b rank 2 and
// shared by every batch. Throws TypeError (not a live tensor), RangeError (rank below 2, mismatched dims).
struct MatmulArgs {
  TensorHandle *a, *b;
  bool transpose_a = false, transpose_b = false;
};

const OpSpec<MatmulArgs> kMatmul{
    "matmul",
    Runs::kAny,
    kernel<&ops::Backend::matmul>,
    {tensor<&MatmulArgs::a>("a"), tensor<&MatmulArgs::b>("b"), boolean<&MatmulArgs::transpose_a>("transposeA"),
     boolean<&MatmulArgs::transpose_b>("transposeB")},
    nullptr,
    [](const Call& call, MatmulArgs& args) -> Napi::Value {
      const Shape& sa = args.a->shape();
      const Shape& sb = args.b->shape();
      if (sa.rank < 2 || sb.rank < 2)
        call.fail("expected a and b of rank 2 or more, but " + two_shapes("a", sa, "b", sb));
      const bool shared_b = sb.rank == 2;
      if (!shared_b && sa.rank != sb.rank) call.fail("batch dimensions differ: " + two_shapes("a", sa, "b", sb));
      int64_t batch = 1;
      for (int axis = 0; axis < sa.rank - 2; ++axis) {
        if (!shared_b && sa[axis] != sb[axis]) call.fail("batch dimensions differ: " + two_shapes("a", sa, "b", sb));
        batch *= sa[axis];
      }
      const bool ta = args.transpose_a, tb = args.transpose_b;
      const int64_t m = ta ? sa[sa.rank - 1] : sa[sa.rank - 2];
      const int64_t k = ta ? sa[sa.rank - 2] : sa[sa.rank - 1];
      const int64_t kb = tb ? sb[sb.rank - 1] : sb[sb.rank - 2];
      const int64_t n = tb ? sb[sb.rank - 2] : sb[sb.rank - 1];
      if (k != kb) {
        call.fail("inner dimensions differ (" + std::to_string(k) + " vs " + std::to_string(kb) +
                  "): " + two_shapes("a", sa, "b", sb) + (ta ? ", transposeA" : "") + (tb ? ", transposeB" : ""));
      }
      Shape out_shape = sa;
      out_shape.dims[sa.rank - 2] = m;
      out_shape.dims[sa.rank - 1] = n;
      float* out = nullptr;
      Napi::Object result = call.output(out_shape, &out);
      call.backend.matmul({.out = out,
                           .a = args.a->data(),
                           .b = args.b->data(),
                           .batch = batch,
                           .m = m,
                           .n = n,
                           .k = k,
                           .transpose_a = ta,
                           .transpose_b = tb,
                           .shared_b = shared_b,
                           .precision = gemm_precision()});
      return result;
    }};

// [sync] linear({ input [..., K], weight [M, K], bias? [M] }): TensorHandle [..., M] = input weightᵀ + bias
// Throws TypeError (not a live tensor), RangeError (weight not rank 2, K or M mismatched).
struct LinearArgs {
  TensorHandle *input, *weight, *bias;
};

const OpSpec<LinearArgs> kLinear{
    "linear",
    Runs::kAny,
    kernel<&ops::Backend::linear>,
    {tensor<&LinearArgs::input>("input"), tensor<&LinearArgs::weight>("weight"),
     optional_tensor<&LinearArgs::bias>("bias")},
    nullptr,
    [](const Call& call, LinearArgs& args) -> Napi::Value {
      const Shape& si = args.input->shape();
      const Shape& sw = args.weight->shape();
      if (si.rank < 1) call.fail("expected input of rank 1 or more, but " + describe("input", si));
      if (sw.rank != 2) call.fail("expected weight of rank 2 (out, in), but " + describe("weight", sw));
      const int64_t k = si.last();
      const int64_t m = sw[0];
      if (sw[1] != k) {
        call.fail("in-features differ (" + std::to_string(k) + " vs " + std::to_string(sw[1]) +
                  "): " + two_shapes("input", si, "weight", sw));
      }
      if (args.bias != nullptr && (args.bias->shape().rank != 1 || args.bias->shape()[0] != m)) {
        call.fail("expected bias of shape [" + std::to_string(m) + "], but " + describe("bias", args.bias->shape()) +
                  " (" + describe("weight", sw) + ")");
      }
      Shape out_shape = si;
      out_shape.dims[si.rank - 1] = m;
      float* out = nullptr;
      Napi::Object result = call.output(out_shape, &out);
      call.backend.linear({.out = out,
                           .input = args.input->data(),
                           .weight = args.weight->data(),
                           .bias = args.bias != nullptr ? args.bias->data() : nullptr,
                           .rows = si.rows(),
                           .m = m,
                           .k = k,
                           .precision = gemm_precision()});
      return result;
    }};

// [sync] setMatmulPrecision(precision: 'highest' | 'high' | 'medium'): string - the previous setting. GPU products
// only. Throws TypeError (not a string), RangeError (another name). A process-wide knob, not an op: one argument.
Napi::Value set_matmul_precision(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const std::string name = read_string("setMatmulPrecision", "precision", info[0]);
    ops::Precision precision;
    if (name == "highest") {
      precision = ops::Precision::kFloat32;
    } else if (name == "high") {
      precision = ops::Precision::kTf32;
    } else if (name == "medium") {
      precision = ops::Precision::kBf16;
    } else {
      throw RangeError("setMatmulPrecision: precision must be 'highest', 'high' or 'medium', got '" + name + "'");
    }
    return Napi::String::New(info.Env(), precision_name(matmul_precision.exchange(precision)));
  });
}

}  // namespace

ops::Precision gemm_precision() { return matmul_precision.load(); }

void register_linear_algebra(Napi::Env env, Napi::Object exports) {
  exports.Set("setMatmulPrecision", Napi::Function::New<set_matmul_precision>(env, "setMatmulPrecision"));
  register_op(env, exports, kMatmul);
  register_op(env, exports, kLinear);
}

}  // namespace bidora::binding
