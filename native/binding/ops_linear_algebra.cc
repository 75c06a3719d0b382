// Node-API glue for matmul and linear: shape checks, output allocation, one GEMM call each on the operands' device.
#include <algorithm>
#include <atomic>

#include "../cpu/gemm.h"
#include "args.h"
#include "gpu.h"
#include "op.h"
#include "ops.h"
#include "tensor_handle.h"

namespace bidora::binding {

namespace {

// How GPU products round their inputs, as PyTorch's set_float32_matmul_precision: 'highest' keeps float32, 'high'
// rounds to TF32 and 'medium' to BF16 for the tensor cores (float32 accumulation either way). The CPU is always
// float32. Process-wide.
enum class MatmulPrecision { kHighest, kHigh, kMedium };
std::atomic<MatmulPrecision> matmul_precision{MatmulPrecision::kHighest};

const char* precision_name(MatmulPrecision precision) {
  switch (precision) {
    case MatmulPrecision::kHigh:
      return "high";
    case MatmulPrecision::kMedium:
      return "medium";
    default:
      return "highest";
  }
}

}  // namespace

#if BIDORA_HAVE_CUDA
cuda::GemmPrecision gpu_gemm_precision() {
  switch (matmul_precision.load()) {
    case MatmulPrecision::kHigh:
      return cuda::GemmPrecision::kTf32;
    case MatmulPrecision::kMedium:
      return cuda::GemmPrecision::kBf16;
    default:
      return cuda::GemmPrecision::kFloat32;
  }
}
#endif

ops::Precision gemm_precision() {
  switch (matmul_precision.load()) {
    case MatmulPrecision::kHigh:
      return ops::Precision::kTf32;
    case MatmulPrecision::kMedium:
      return ops::Precision::kBf16;
    default:
      return ops::Precision::kFloat32;
  }
}

namespace {

std::string two_shapes(const char* first, const Shape& a, const char* second, const Shape& b) {
  return describe(first, a) + " and " + describe(second, b);
}

// [sync] matmul(a, b, transposeA: boolean, transposeB: boolean): TensorHandle
// a [..., M, K] (or [..., K, M] transposed), b [..., K, N] (or [..., N, K]); batch dims equal, or b rank 2 and
// shared by every batch. Throws TypeError (not a live tensor), RangeError (rank below 2, mismatched dims).
Napi::Value matmul(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    TensorHandle& a = any_tensor_arg({info, 0, "matmul", "a"});
    TensorHandle& b = any_tensor_arg({info, 1, "matmul", "b"});
    const Device device = same_device("matmul", {{"a", &a}, {"b", &b}});
    const bool transpose_a = boolean_arg({info, 2, "matmul", "transposeA"}, false);
    const bool transpose_b = boolean_arg({info, 3, "matmul", "transposeB"}, false);
    const Shape& sa = a.shape();
    const Shape& sb = b.shape();
    if (sa.rank < 2 || sb.rank < 2) {
      throw RangeError("matmul: expected a and b of rank 2 or more, but " + two_shapes("a", sa, "b", sb));
    }
    const bool shared_b = sb.rank == 2;
    if (!shared_b && sa.rank != sb.rank) {
      throw RangeError("matmul: batch dimensions differ: " + two_shapes("a", sa, "b", sb));
    }
    int64_t batch = 1;
    for (int axis = 0; axis < sa.rank - 2; ++axis) {
      if (!shared_b && sa[axis] != sb[axis]) {
        throw RangeError("matmul: batch dimensions differ: " + two_shapes("a", sa, "b", sb));
      }
      batch *= sa[axis];
    }
    const int64_t m = transpose_a ? sa[sa.rank - 1] : sa[sa.rank - 2];
    const int64_t k = transpose_a ? sa[sa.rank - 2] : sa[sa.rank - 1];
    const int64_t kb = transpose_b ? sb[sb.rank - 1] : sb[sb.rank - 2];
    const int64_t n = transpose_b ? sb[sb.rank - 2] : sb[sb.rank - 1];
    if (k != kb) {
      throw RangeError("matmul: inner dimensions differ (" + std::to_string(k) + " vs " + std::to_string(kb) +
                       "): " + two_shapes("a", sa, "b", sb) + (transpose_a ? ", transposeA" : "") +
                       (transpose_b ? ", transposeB" : ""));
    }
    Shape out_shape = sa;
    out_shape.dims[sa.rank - 2] = m;
    out_shape.dims[sa.rank - 1] = n;
    TensorHandle* out = nullptr;
    Napi::Object result = TensorHandle::allocate(info.Env(), out_shape, &out, device);

    const int64_t a_rows = sa[sa.rank - 2], a_cols = sa[sa.rank - 1];
    const int64_t b_rows = sb[sb.rank - 2], b_cols = sb[sb.rank - 1];
#if BIDORA_HAVE_CUDA
    if (device == Device::kCuda) {
      for (int64_t index = 0; index < batch; ++index) {
        cuda::gemm(out->data() + index * m * n, a.data() + index * a_rows * a_cols, transpose_a,
                   b.data() + (shared_b ? 0 : index * b_rows * b_cols), transpose_b, m, n, k, 1.0f, 0.0f,
                   gpu_gemm_precision(), {}, nullptr);
      }
      cuda::check_launch("matmul");
      return result;
    }
#endif
    cpu::GemmOperands operands{};
    operands.c_row_stride = n;
    operands.c_col_stride = 1;
    operands.a_row_stride = transpose_a ? 1 : a_cols;
    operands.a_col_stride = transpose_a ? a_cols : 1;
    operands.b_row_stride = transpose_b ? 1 : b_cols;
    operands.b_col_stride = transpose_b ? b_cols : 1;
    operands.k = k;
    operands.alpha = 1.0f;
    operands.beta = 0.0f;
    if (shared_b && !transpose_a) {
      // Every batch multiplies the same b: one GEMM over all rows is faster than `batch` small ones.
      operands.c = out->data();
      operands.a = a.data();
      operands.b = b.data();
      operands.m = batch * m;
      operands.n = n;
      cpu::gemm(operands);
      return result;
    }
    operands.m = m;
    operands.n = n;
    for (int64_t index = 0; index < batch; ++index) {
      operands.c = out->data() + index * m * n;
      operands.a = a.data() + index * a_rows * a_cols;
      operands.b = b.data() + (shared_b ? 0 : index * b_rows * b_cols);
      cpu::gemm(operands);
    }
    return result;
  });
}

// [sync] linear(input [..., K], weight [M, K], bias [M] | undefined): TensorHandle [..., M] = input weightᵀ + bias
// Throws TypeError (not a live tensor), RangeError (weight not rank 2, K or M mismatched).
Napi::Value linear(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    TensorHandle& input = any_tensor_arg({info, 0, "linear", "input"});
    TensorHandle& weight = any_tensor_arg({info, 1, "linear", "weight"});
    TensorHandle* bias = optional_any_tensor_arg({info, 2, "linear", "bias"});
    const Device device = same_device("linear", {{"input", &input}, {"weight", &weight}, {"bias", bias}});
    const Shape& si = input.shape();
    const Shape& sw = weight.shape();
    if (si.rank < 1) throw RangeError("linear: expected input of rank 1 or more, but " + describe("input", si));
    if (sw.rank != 2) throw RangeError("linear: expected weight of rank 2 (out, in), but " + describe("weight", sw));
    const int64_t k = si.last();
    const int64_t m = sw[0];
    if (sw[1] != k) {
      throw RangeError("linear: in-features differ (" + std::to_string(k) + " vs " + std::to_string(sw[1]) +
                       "): " + two_shapes("input", si, "weight", sw));
    }
    if (bias != nullptr && (bias->shape().rank != 1 || bias->shape()[0] != m)) {
      throw RangeError("linear: expected bias of shape [" + std::to_string(m) + "], but " +
                       describe("bias", bias->shape()) + " (" + describe("weight", sw) + ")");
    }
    Shape out_shape = si;
    out_shape.dims[si.rank - 1] = m;
    TensorHandle* out = nullptr;
    Napi::Object result = TensorHandle::allocate(info.Env(), out_shape, &out, device);
    const int64_t rows = si.rows();
#if BIDORA_HAVE_CUDA
    if (device == Device::kCuda) {
      cuda::gemm(out->data(), input.data(), false, weight.data(), true, rows, m, k, 1.0f, 0.0f, gpu_gemm_precision(),
                 {}, nullptr);
      if (bias != nullptr) cuda::add(out->data(), out->data(), bias->data(), rows * m, m, nullptr);
      cuda::check_launch("linear");
      return result;
    }
#endif
    if (bias != nullptr) {
      // Start C at the bias and let the GEMM accumulate onto it (beta = 1): no second pass over the output.
      for (int64_t row = 0; row < rows; ++row) std::copy_n(bias->data(), m, out->data() + row * m);
    }
    cpu::GemmOperands operands{};
    operands.c = out->data();
    operands.c_row_stride = m;
    operands.c_col_stride = 1;
    operands.a = input.data();
    operands.a_row_stride = k;
    operands.a_col_stride = 1;
    operands.b = weight.data();
    operands.b_row_stride = 1;  // B(k, j) = weight[j, k]
    operands.b_col_stride = k;
    operands.m = rows;
    operands.n = m;
    operands.k = k;
    operands.alpha = 1.0f;
    operands.beta = bias != nullptr ? 1.0f : 0.0f;
    cpu::gemm(operands);
    return result;
  });
}

// [sync] setMatmulPrecision(precision: 'highest' | 'high' | 'medium'): string - the previous setting. GPU products
// only (see MatmulPrecision). Throws TypeError (not a string), RangeError (another name).
Napi::Value set_matmul_precision(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const std::string name = string_arg({info, 0, "setMatmulPrecision", "precision"});
    MatmulPrecision precision;
    if (name == "highest") {
      precision = MatmulPrecision::kHighest;
    } else if (name == "high") {
      precision = MatmulPrecision::kHigh;
    } else if (name == "medium") {
      precision = MatmulPrecision::kMedium;
    } else {
      throw RangeError("setMatmulPrecision: precision must be 'highest', 'high' or 'medium', got '" + name + "'");
    }
    return Napi::String::New(info.Env(), precision_name(matmul_precision.exchange(precision)));
  });
}

}  // namespace

void register_linear_algebra(Napi::Env env, Napi::Object exports) {
  exports.Set("setMatmulPrecision", Napi::Function::New<set_matmul_precision>(env, "setMatmulPrecision"));
  exports.Set("matmul", Napi::Function::New<matmul>(env, "matmul"));
  exports.Set("linear", Napi::Function::New<linear>(env, "linear"));
}

}  // namespace bidora::binding
