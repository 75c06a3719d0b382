// Node-API glue for matmul and linear: shape checks, output allocation, one GEMM call each.
#include <algorithm>

#include "../cpu/gemm.h"
#include "args.h"
#include "ops.h"
#include "tensor_handle.h"

namespace bidora::binding {

namespace {

std::string two_shapes(const char* first, const Shape& a, const char* second, const Shape& b) {
  return describe(first, a) + " and " + describe(second, b);
}

// [sync] matmul(a, b, transposeA: boolean, transposeB: boolean): TensorHandle
// a [..., M, K] (or [..., K, M] transposed), b [..., K, N] (or [..., N, K]); batch dims equal, or b rank 2 and
// shared by every batch. Throws TypeError (not a live tensor), RangeError (rank below 2, mismatched dims).
Napi::Value matmul(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    TensorHandle& a = tensor_arg({info, 0, "matmul", "a"});
    TensorHandle& b = tensor_arg({info, 1, "matmul", "b"});
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
    Napi::Object result = TensorHandle::allocate(info.Env(), out_shape, &out);

    const int64_t a_rows = sa[sa.rank - 2], a_cols = sa[sa.rank - 1];
    const int64_t b_rows = sb[sb.rank - 2], b_cols = sb[sb.rank - 1];
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
    TensorHandle& input = tensor_arg({info, 0, "linear", "input"});
    TensorHandle& weight = tensor_arg({info, 1, "linear", "weight"});
    TensorHandle* bias = optional_tensor_arg({info, 2, "linear", "bias"});
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
    Napi::Object result = TensorHandle::allocate(info.Env(), out_shape, &out);
    const int64_t rows = si.rows();
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

}  // namespace

void register_linear_algebra(Napi::Env env, Napi::Object exports) {
  exports.Set("matmul", Napi::Function::New<matmul>(env, "matmul"));
  exports.Set("linear", Napi::Function::New<linear>(env, "linear"));
}

}  // namespace bidora::binding
